"""How fast the command line starts: `qpm --help` and `qpm <command> --help`, whole process.

    python benchmarks/startup.py [--repeat 10]

Prints the median and the best wall-clock seconds of each command (a fresh interpreter each
time, as a user's shell starts it) against the target of 0.3 s, and which heavy modules
(torch, pyomo, scipy, matplotlib, the solvers) each one imported: none should. Last, the
address space that importing torch and torchvision maps (VmPeak, Linux): what a command that
trains or loads a model needs under ``ulimit -v`` (``qpm.errors.TORCH_ADDRESS_SPACE``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.3
HEAVY = ("torch", "pyomo", "scipy", "matplotlib", "highspy", "gurobipy", "pyscipopt",
         "numpy", "torchvision", "sklearn")
COMMANDS = ([], ["solve"], ["compare"], ["train"], ["similarities"], ["evaluate"],
            ["explain"])


def wall(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qpm", *args, "--help"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def heavy_imports(args: list[str], env: dict) -> list[str]:
    code = ("import sys, runpy; sys.argv = ['qpm', *sys.argv[1:], '--help']\n"
            "try:\n    runpy.run_module('qpm', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, check=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return out.stderr.split()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wall([], env)  # warm the file cache
    print(f"{'command':<28} {'median s':>8} {'best s':>8}  target {TARGET} s  heavy imports")
    worst = 0.0
    for cmd in COMMANDS:
        times = [wall(cmd, env) for _ in range(args.repeat)]
        med = statistics.median(times)
        worst = max(worst, med)
        name = " ".join(["qpm", *cmd, "--help"])
        heavy = heavy_imports(cmd, env)
        print(f"{name:<28} {med:>8.3f} {min(times):>8.3f}  {'ok' if med <= TARGET else 'SLOW':<12}"
              f"  {', '.join(heavy) or 'none'}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus; "
          f"worst median {worst:.3f} s")
    print(f"address space of `import torch, torchvision`: {torch_address_space(env)}")
    return 0


def torch_address_space(env: dict) -> str:
    code = ("import torch, torchvision\n"
            "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True)
    except (subprocess.CalledProcessError, IndexError):
        return "n/a (needs Linux /proc)"
    return f"{int(out.stdout.split()[-1]) / 2**20:.2f} GiB (VmPeak)"


if __name__ == "__main__":
    sys.exit(main())
