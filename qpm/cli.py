"""The ``qpm`` command line.

Each sub-command lives in its own module under :mod:`qpm.commands` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``; modules are imported lazily so that
``qpm solve`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qpm.errors import QPMError

# sub-command name -> module implementing it
COMMANDS: dict[str, str] = {
    "train": "qpm.commands.train",
    "solve": "qpm.commands.solve",
    "similarities": "qpm.commands.similarities",
    "evaluate": "qpm.commands.evaluate",
    "explain": "qpm.commands.explain",
}


def _build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="qpm", description="Globally interpretable image classification (QPM)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    modules = {}
    for name, module_name in COMMANDS.items():
        # Import only the module the user asked for (all of them for --help).
        if wanted is not None and wanted != name and wanted in COMMANDS:
            sub.add_parser(name)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("qpm.commands"):
                continue  # command not built yet
            raise
        module.add_parser(sub)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.command].run(args) or 0)
    except QPMError as exc:
        print(f"qpm {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"qpm {args.command}: interrupted; finished artifacts are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
