"""The package's rooms and which way their imports point, read from the source (AST).

A room is a folder or top-level module of ``qpm`` (``qpm.run_folder.lock`` is in room
``run_folder``). Every import counts, also one inside a function; only imports under
``if TYPE_CHECKING:`` do not. To add a room or let one use another, edit ``MAY_IMPORT``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qpm"

BOTTOM = {"text", "errors", "io", "memory", "npz", "logs"}
# room -> the other rooms it may import. Not listed: may import nothing of qpm.
MAY_IMPORT: dict[str, set[str]] = {
    "text": set(),
    "errors": {"text"},
    "io": {"errors", "text", "npz", "memory"},
    "memory": {"errors"},  # how much memory a job may still take
    "npz": set(),  # the .npy member format under io: numpy only
    "logs": {"errors", "text"},
    "assignment": BOTTOM,  # numpy and solvers only: no torch, no other room
    "data": BOTTOM,
    "models": BOTTOM,
    "explain": BOTTOM,
    "conformal": BOTTOM,  # prediction sets and CHiQPM's tree over numpy arrays
    "metrics": BOTTOM | {"data", "models"},
    "baselines": BOTTOM | {"models"},
    "run_folder": BOTTOM | {"assignment", "data"},  # config: tau rules, dataset defaults
    "inference": BOTTOM | {"data", "models", "explain", "run_folder", "conformal"},
    "pipeline": BOTTOM | {"assignment", "data", "models", "baselines", "metrics", "run_folder",
                          "explain"},  # explain: only through HOOKS below
    "commands": BOTTOM | {"assignment", "data", "models", "explain", "metrics", "baselines",
                          "run_folder", "inference", "pipeline", "conformal", "demo"},
    "demo": BOTTOM | {"conformal", "explain", "inference"},  # qpm demo's Gradio app
    "cli": BOTTOM,  # sub-commands are imported by name (importlib), after parsing
    "__main__": {"cli"},
    "qpm": {"inference"},  # qpm/__init__.py: the version and a lazy qpm.load
}
# (room, room it may import only from these modules): a named hook instead of a free edge.
HOOKS = {("pipeline", "explain"): {"qpm.pipeline.stages.draw"}}
# Third-party packages a room never imports (at any depth).
NEVER = {room: {"torch", "torchvision", "timm"} for room in ("assignment", "conformal",
                                                             *BOTTOM)}
# Cycles that exist today and are being removed elsewhere (none left).
KNOWN_CYCLES: list[set[str]] = []

# Inside assignment: its parts, bottom to top, and which way their imports point. A module not
# named here is "core" (problem, presets, redundancy, heuristic, verifier, result, ...).
ASSIGNMENT_PARTS = {
    "qpm.assignment.status": "base", "qpm.assignment.limits": "base",
    "qpm.assignment.trace": "base",
    "qpm.assignment.backends": "backends",  # one module per solver, one contract: numpy only
    "qpm.assignment.formulations": "formulations",
    "qpm.assignment.bounds": "bounds",  # upper bounds on their own: they run the root LP
    "qpm.assignment.solving": "facade", "qpm.assignment.compare": "facade",
    "qpm.assignment.compare_report": "facade",
}
ASSIGNMENT_MAY_IMPORT = {
    "base": set(),
    "backends": {"base"},  # never a formulation, the problem or the facade
    "core": {"base"},
    "formulations": {"base", "core", "backends"},
    "bounds": {"base", "core", "backends", "formulations"},
    "facade": {"base", "core", "backends", "formulations", "bounds"},
}
# The built-in presets' apply bodies use the full model's row builders (imported when a model
# is built, so the problem stays free of Pyomo): the one edge from core up to a formulation.
ASSIGNMENT_HOOKS = {("core", "formulations"): {"qpm.assignment.presets"}}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``module`` imports: qpm modules by full name, others by top package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from qpm.x import y` imports the module qpm.x.y if there is one, else qpm.x
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names)
    out = set()
    for name in found:
        if name.split(".")[0] != "qpm":
            out.add(name.split(".")[0])
            continue
        while name not in modules:
            name = name.rpartition(".")[0]
        out.add(name)
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qpm"


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue  # third party
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(edges.items()):
        mine = room(module)
        for target in sorted(t for t in targets if t.startswith("qpm") and t != "qpm"):
            other = room(target)
            if other == mine:
                continue
            allowed = other in MAY_IMPORT.get(mine, set())
            hook = HOOKS.get((mine, other))
            if not allowed or (hook is not None and module not in hook):
                wrong.append(f"{module} -> {target}")
    return wrong


def assignment_part(module: str) -> str:
    if module == "qpm.assignment":
        return "facade"  # the package's lazy public names
    names = [n for n in ASSIGNMENT_PARTS if module == n or module.startswith(n + ".")]
    return ASSIGNMENT_PARTS[max(names, key=len)] if names else "core"


def upward_in_assignment(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(edges.items()):
        if room(module) != "assignment":
            continue
        mine = assignment_part(module)
        for target in sorted(t for t in targets if room(t) == "assignment"):
            other = assignment_part(target)
            hook = ASSIGNMENT_HOOKS.get((mine, other))
            if other != mine and other not in ASSIGNMENT_MAY_IMPORT[mine] and (
                    hook is None or module not in hook):
                wrong.append(f"{module} -> {target}")
    return wrong


def test_every_room_is_in_the_table():
    rooms = {room(m) for m in module_names()}
    assert rooms == set(MAY_IMPORT), "add the new room to MAY_IMPORT (and docs/architecture.md)"


def test_imports_point_down():
    assert upward_imports(graph()) == []


def test_imports_inside_assignment_point_down():
    assert upward_in_assignment(graph()) == []


def test_no_import_cycles_but_the_known_ones():
    # The root package is left out: `import qpm` (for __version__) loads nothing else.
    edges = {m: {t for t in ts if t != "qpm"} for m, ts in graph().items()}
    found = cycles(edges)
    assert [c for c in found if c not in KNOWN_CYCLES] == []
    # a known cycle that is gone must leave the list, so none can come back unnoticed
    assert [c for c in KNOWN_CYCLES if c not in found] == []


def test_rooms_that_never_import_torch():
    wrong = [f"{m} imports {t}" for m, ts in graph().items() for t in ts
             if t in NEVER.get(room(m), set())]
    assert wrong == []


def test_the_checks_see_what_they_forbid():
    # The rules above must be able to fail: an upward edge, a cycle and torch in assignment.
    edges = {"qpm.models.a": {"qpm.pipeline.b"}, "qpm.pipeline.b": {"qpm.models.a"},
             "qpm.pipeline.c": {"qpm.explain.d"}, "qpm.explain.d": set()}
    assert upward_imports(edges) == ["qpm.models.a -> qpm.pipeline.b",
                                     "qpm.pipeline.c -> qpm.explain.d"]
    assert cycles(edges) == [{"qpm.models.a", "qpm.pipeline.b"}]
    assert "torch" in NEVER["assignment"] and "pipeline" not in MAY_IMPORT["models"]
    inside = {"qpm.assignment.backends.highs": {"qpm.assignment.formulations.full"},
              "qpm.assignment.formulations.full": {"qpm.assignment.solving"},
              "qpm.assignment.presets": {"qpm.assignment.formulations.full"},
              "qpm.assignment.problem": {"qpm.assignment.backends.base"}}
    assert upward_in_assignment(inside) == [
        "qpm.assignment.backends.highs -> qpm.assignment.formulations.full",
        "qpm.assignment.formulations.full -> qpm.assignment.solving",
        "qpm.assignment.problem -> qpm.assignment.backends.base"]
