"""Build + hand-off of the full Pyomo model (no solve): qpm's compiler against Pyomo's own.

    python benchmarks/handoff.py --size cub --out handoff.json

One Pyomo model (``full.build_model(make_instance(size))``) is built once, then handed to the
solvers by each method in turn, in one process:

* ``own``: :class:`~qpm.assignment.formulations.compile.ModelCompiler` to the shared
  ``MatrixForm`` (compile), then each backend session's load (HiGHS ``passModel``, Gurobi
  ``addMVar``/``addMConstr``, SCIP's MPS reader), as ``qpm solve`` does.
* ``lsfc``: Pyomo's ``LinearStandardFormCompiler().write(model, mixed_form=True,
  set_sense=None)`` plus the column bounds, integrality and row bounds it does not give
  (compile), then into highspy with ``passModel`` straight from its CSC matrix, and into
  Gurobi and SCIP through a ``MatrixForm`` and the same sessions as ``own`` (what switching
  the compiler would mean for them).
* ``persistent``: Pyomo's persistent interfaces (``pyomo.contrib.solver``: ``highs``,
  ``gurobi_persistent``, ``scip_persistent``), whose ``set_instance(model)`` compiles and
  loads in one step (all of it under "load"). SCIP's runs in a forked child process, stopped
  after ``--method-timeout`` seconds: it hands the objective over as one Python ``sum`` of
  pyscipopt expressions, quadratic in its length, which no signal interrupts.

Gurobi's size-limited licence refuses to *optimise* a model over 2000 variables or rows, not to
hold one, so every Gurobi row is a real load at any size. The compiled matrices of ``own`` and
``lsfc`` are checked to be the same model (up to column order) outside the timings. The load
average is recorded before and after (other jobs on the machine slow everything alike).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qpm.assignment.backends.base import MatrixForm  # noqa: E402
from qpm.assignment.formulations.compile import ModelCompiler  # noqa: E402
from qpm.assignment.formulations.full import build_model  # noqa: E402
from qpm.assignment.synthetic import SIZES, make_instance  # noqa: E402
from qpm.io import write_json  # noqa: E402

log = logging.getLogger("handoff")

SESSIONS = {
    "highs": "qpm.assignment.backends.highs:HighsSession",
    "gurobi": "qpm.assignment.backends.gurobi:GurobiSession",
    "scip": "qpm.assignment.backends.scip:ScipSession",
}
PERSISTENT = {
    "highs": "pyomo.contrib.solver.solvers.highs:Highs",
    "gurobi": "pyomo.contrib.solver.solvers.gurobi.gurobi_persistent:GurobiPersistent",
    "scip": "pyomo.contrib.solver.solvers.scip.scip_persistent:ScipPersistent",
}
METHODS = ("own", "lsfc", "persistent")
# Persistent interfaces run in a child process that --method-timeout stops (see
# _timed_in_child); the others in this process, like everything else.
ISOLATED = {"scip"}


def _load_class(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _Timeout(Exception):
    """A method ran past ``--method-timeout``."""


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    gc.collect()  # the garbage of the method before is not this one's cost
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def _timed_in_child(fn: Callable[[], object], limit: float) -> tuple[None, float]:
    """The seconds ``fn()`` takes in a forked child (the model shared copy-on-write), killed
    after ``limit`` s: for a method that can run for hours inside one C call (SCIP's
    persistent interface sums a million pyscipopt expressions, each sum a copy), which
    neither a signal nor a thread can interrupt."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(("ok", _timed(fn)[1]))
        except Exception as exc:  # reported by the parent
            send.send(("error", f"{type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=child)
    proc.start()
    deadline = time.monotonic() + (limit or math.inf)
    try:
        while not recv.poll(1.0):
            if not proc.is_alive():
                raise RuntimeError(f"the child process ended with code {proc.exitcode}")
            if time.monotonic() > deadline:
                raise _Timeout
        kind, value = recv.recv()
    finally:
        proc.kill()
        proc.join()
    if kind == "error":
        raise RuntimeError(value)
    return None, value


def lsfc_compile(model) -> dict:
    """Pyomo's standard form plus what a solver needs besides (bounds, integrality)."""
    from pyomo.repn.plugins.standard_form import LinearStandardFormCompiler

    info = LinearStandardFormCompiler().write(model, mixed_form=True, set_sense=None)
    n = len(info.columns)
    col_lo, col_hi = np.empty(n), np.empty(n)
    integer = np.zeros(n, dtype=bool)
    for j, v in enumerate(info.columns):
        lb, ub = v.bounds
        col_lo[j] = -math.inf if lb is None else lb
        col_hi[j] = math.inf if ub is None else ub
        integer[j] = v.is_integer()
    sense = np.fromiter((row.bound_type for row in info.rows), dtype=np.int8, count=len(info.rows))
    rhs = np.asarray(info.rhs, dtype=np.float64)
    row_lo = np.where(sense >= 0, np.where(sense == 0, rhs, -math.inf), rhs)
    row_hi = np.where(sense <= 0, np.where(sense == 0, rhs, math.inf), rhs)
    (objective,) = info.objectives
    return {"info": info, "A": sp.csc_array(info.A), "c": info.c.toarray().ravel(),
            "c0": float(info.c_offset[0]), "maximize": objective.sense.name == "maximize",
            "row_lo": row_lo, "row_hi": row_hi, "col_lo": col_lo, "col_hi": col_hi,
            "integer": integer}


def lsfc_highs(std: dict):
    """highspy straight from the standard form's CSC arrays (one ``passModel``)."""
    import highspy as hs

    from qpm.assignment.backends.highs import new_highs

    A, inf = std["A"], hs.kHighsInf
    lp = hs.HighsLp()
    lp.num_col_, lp.num_row_ = A.shape[1], A.shape[0]
    lp.col_cost_ = std["c"]
    lp.col_lower_, lp.col_upper_ = (np.clip(std[k], -inf, inf) for k in ("col_lo", "col_hi"))
    lp.row_lower_, lp.row_upper_ = (np.clip(std[k], -inf, inf) for k in ("row_lo", "row_hi"))
    lp.offset_ = std["c0"]
    lp.sense_ = hs.ObjSense.kMaximize if std["maximize"] else hs.ObjSense.kMinimize
    lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = A.shape[1], A.shape[0]
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(np.float64)
    lp.integrality_ = [hs.HighsVarType.kInteger if f else hs.HighsVarType.kContinuous
                       for f in std["integer"]]
    h = new_highs()
    if h.passModel(lp) == hs.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the standard form")
    return h


def lsfc_form(std: dict) -> MatrixForm:
    return MatrixForm(c=std["c"], c0=std["c0"], maximize=std["maximize"],
                      A=sp.csr_array(std["A"]), row_lo=std["row_lo"], row_hi=std["row_hi"],
                      col_lo=std["col_lo"], col_hi=std["col_hi"], integer=std["integer"],
                      columns=std["info"].columns, start=np.full(std["c"].size, np.nan))


def same_model(form: MatrixForm, std: dict) -> bool:
    """Whether the standard form is the compiled form with its columns permuted."""
    order = {id(v): j for j, v in enumerate(form.columns)}
    perm = np.array([order[id(v)] for v in std["info"].columns])
    if perm.size != form.n_cols or std["A"].shape[0] != form.n_rows:
        return False
    A = sp.csr_array(form.A)[:, perm]
    return (np.array_equal(std["c"], form.c[perm]) and (A != sp.csr_array(std["A"])).nnz == 0
            and np.array_equal(std["row_lo"], form.row_lo)
            and np.array_equal(std["row_hi"], form.row_hi)
            and np.array_equal(std["integer"], form.integer[perm]))


def _close(handle) -> None:
    close = getattr(handle, "close", None)
    if callable(close):
        close()


def _row(method: str, solver: str, compile_s: float | None, load_s: float | None,
         note: str = "") -> dict:
    return {"method": method, "solver": solver, "compile_s": compile_s, "load_s": load_s,
            "note": note}


def _load_each(method: str, solvers: list[str], compile_s: float | None,
               loaders: dict[str, Callable[[], object]], limit: float | None = None
               ) -> list[dict]:
    """Each solver's load, timed; with ``limit``, in a child process stopped after it."""
    rows = []
    for name in solvers:
        try:
            if limit is None:
                handle, seconds = _timed(loaders[name])
            else:
                handle, seconds = _timed_in_child(loaders[name], limit)
        except _Timeout:
            rows.append(_row(method, name, compile_s, None, f"not done after {limit:.0f} s"))
            log.info("%s -> %s: stopped after %.0f s", method, name, limit)
            continue
        except Exception as exc:  # a refused or failed load is a result, not a crash
            rows.append(_row(method, name, compile_s, None, f"failed: {exc}"))
            continue
        _close(handle)
        del handle
        rows.append(_row(method, name, compile_s, seconds))
        log.info("%s -> %s: load %.1f s", method, name, seconds)
    return rows


def _session_loader(name: str, make_form: Callable[[], MatrixForm]) -> Callable[[], object]:
    session = _load_class(SESSIONS[name])
    return lambda: session(make_form())


def run_own(model, solvers: list[str]) -> tuple[list[dict], MatrixForm]:
    form, seconds = _timed(lambda: ModelCompiler(model).form)
    log.info("own: compile %.1f s", seconds)
    loaders = {name: _session_loader(name, lambda: form) for name in solvers}
    return _load_each("own", solvers, seconds, loaders), form


def run_lsfc(model, solvers: list[str]) -> tuple[list[dict], dict]:
    std, seconds = _timed(lambda: lsfc_compile(model))
    log.info("lsfc: compile %.1f s", seconds)
    loaders = {name: _session_loader(name, lambda: lsfc_form(std)) for name in solvers}
    if "highs" in loaders:
        loaders["highs"] = lambda: lsfc_highs(std)
    return _load_each("lsfc", solvers, seconds, loaders), std


def _persistent(name: str, model):
    solver = _load_class(PERSISTENT[name])()
    solver.set_instance(model)
    return solver


def run_persistent(model, solvers: list[str], limit: float) -> list[dict]:
    rows = []
    for name in solvers:
        rows += _load_each("persistent", [name], None,
                           {name: lambda name=name: _persistent(name, model)},
                           limit if name in ISOLATED else None)
        rows[-1]["method"] = f"persistent ({PERSISTENT[name].rpartition(':')[2]})"
    return rows


def add_ratios(rows: list[dict], build_s: float) -> None:
    """total = build + compile + load; ratios against ``own`` into the same solver."""
    for r in rows:
        ok = r["load_s"] is not None
        r["handoff_s"] = (r["compile_s"] or 0.0) + r["load_s"] if ok else None
        r["total_s"] = build_s + r["handoff_s"] if ok else None
    own = {r["solver"]: r for r in rows if r["method"] == "own" and r["total_s"] is not None}
    for r in rows:
        base = own.get(r["solver"])
        for key in ("total_s", "handoff_s"):
            ratio = None if base is None or r[key] is None else r[key] / base[key]
            r[key.replace("_s", "_ratio")] = ratio


def table(rows: list[dict], build_s: float) -> str:
    def f(x, spec=".2f"):
        return "-" if x is None else format(x, spec)

    head = (f"{'method':<32} {'solver':<7} {'build':>6} {'compile':>8} {'load':>7} "
            f"{'total':>7} {'x own':>6} {'hand-off':>9} {'x own':>6}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['method']:<32} {r['solver']:<7} {build_s:>6.2f} {f(r['compile_s']):>8} "
            f"{f(r['load_s']):>7} {f(r['total_s']):>7} {f(r['total_ratio'], '.2f'):>6} "
            f"{f(r['handoff_s']):>9} {f(r['handoff_ratio'], '.2f'):>6}"
            + (f"  {r['note']}" if r["note"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solvers", default="highs,gurobi,scip")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--method-timeout", type=float, default=600.0, metavar="S",
                   help="stop SCIP's persistent set_instance (run in a child process) after S "
                   "seconds (0: never)")
    p.add_argument("--out", metavar="handoff.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    solvers = [s for s in args.solvers.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]

    out: dict = {"size": args.size, "seed": args.seed, "loadavg_before": os.getloadavg()}
    problem = make_instance(args.size, seed=args.seed)
    model, build_s = _timed(lambda: build_model(problem))
    out.update(pairs=len(problem.pairs()), build_s=build_s)
    log.info("%s: F=%d C=%d pairs=%d, build %.1f s", args.size, problem.n_total,
             problem.n_classes, out["pairs"], build_s)
    rows: list[dict] = []
    form = std = None
    if "own" in methods:
        own_rows, form = run_own(model, solvers)
        rows += own_rows
        out.update(cols=form.n_cols, rows=form.n_rows, nnz=int(form.A.nnz))
    if "lsfc" in methods:
        lsfc_rows, std = run_lsfc(model, solvers)
        rows += lsfc_rows
    if form is not None and std is not None:
        out["same_model"] = bool(same_model(form, std))
        log.info("own and lsfc compile the same model: %s", out["same_model"])
    del form, std
    if "persistent" in methods:
        rows += run_persistent(model, solvers, args.method_timeout)
    add_ratios(rows, build_s)
    out["loadavg_after"] = os.getloadavg()
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out["methods"] = rows
    print(f"{args.size}: {out.get('cols', '?')} columns, {out.get('rows', '?')} rows, "
          f"{out.get('nnz', '?')} nonzeros; load average before "
          f"{', '.join(f'{x:.2f}' for x in out['loadavg_before'])}, after "
          f"{', '.join(f'{x:.2f}' for x in out['loadavg_after'])}; "
          f"peak RSS {out['peak_rss_gb']:.1f} GB")
    print(table(rows, build_s))
    if args.out:
        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
