"""What ``qpm train`` prints when a run is done: the run's summary, its global explanation
in words, and the tables beside it (CHiQPM beside QPM, a frozen backbone beside its
fine-tuned run)."""

from __future__ import annotations

from itertools import combinations

from qpm.errors import QPMError
from qpm.text import printable


def _fmt_acc(metrics: dict, key: str) -> str:
    value = metrics.get(key, {}).get("accuracy")
    return "n/a" if value is None else f"{value:.2f}%"


def explanation_lines(assignment: dict[int, list[int]], class_names: list[str],
                      max_classes: int = 20, max_pairs: int = 10) -> list[str]:
    """Each class with its features, and how many features pairs of classes share."""

    class_names = [printable(n) for n in class_names]
    lines = []
    classes = sorted(assignment)
    for c in classes[:max_classes]:
        name = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"  class {name}: features {', '.join(str(f) for f in assignment[c])}")
    if len(classes) > max_classes:
        lines.append(f"  ... {len(classes) - max_classes} more classes (see assignment.json)")
    sets = {c: set(assignment[c]) for c in classes}
    shared = sorted(((len(sets[a] & sets[b]), a, b) for a, b in combinations(classes, 2)),
                    reverse=True)
    if shared:
        counts: dict[int, int] = {}
        for n, _, _ in shared:
            counts[n] = counts.get(n, 0) + 1
        hist = ", ".join(f"{n} shared: {counts[n]} pairs" for n in sorted(counts))
        lines.append(f"  class pairs by shared features: {hist}")
        top = [s for s in shared if s[0] > 0][:max_pairs]
        if top:
            lines.append("  most similar classes: " + "; ".join(
                f"{class_names[a]} & {class_names[b]} share {n}" for n, a, b in top))
    return lines


def assignment_counts(assignment: dict[int, list[int]], selected: list[int]):
    """"n selected, m used" of an assignment (class -> features)."""
    from qpm.explain.structure import FeatureCounts

    used = {f for feats in assignment.values() for f in feats}
    per_class = max((len(f) for f in assignment.values()), default=0)
    return FeatureCounts(len(set(selected) | used), len(used), len(assignment), per_class)


# The rows of the closing table of a chiqpm run (CHiQPM's own figures).
BESIDE_QPM = ("accuracy", "pairs_sharing", "forced_pairs_sharing", "sid@5",
              "class_independence", "contrastiveness", "correlation")


def beside_qpm(summary) -> str:
    """The closing table of a chiqpm run: its metrics beside the run's QPM model of the same
    n and k (the most recent one), computed now, as ``qpm evaluate`` computes them."""
    from qpm import run_folder as rf
    from qpm.commands.evaluate import evaluate_models
    from qpm.metrics.model_eval import format_table
    from qpm.pipeline import distributed as dist

    cfg = summary.config
    run = rf.open_run(summary.run_dir, cfg.data_root)
    mine = [m for m in run.models if m.model_type == "chiqpm" and m.folder == summary.variant_dir]

    def same_size(m) -> bool:
        c = run.config_of(m)
        return (c.n_features, c.per_class) == (cfg.n_features, cfg.per_class)

    qpms = [m for m in run.models if m.model_type == "qpm" and same_size(m)]
    qpms = [max(qpms, key=lambda m: m.file.stat().st_mtime_ns)] if qpms else []
    results, _, _, _ = evaluate_models(run, mine + qpms, dist.get_context().device,
                                       cfg.batch_size * 2)
    lines = [f"CHiQPM beside QPM on this run (rho {cfg.rho:g}; accuracy and SID@5 on the test "
             "set, the feature metrics on the training images):",
             format_table(results, BESIDE_QPM)]
    if not qpms:
        lines.append(f"(no QPM model with n={cfg.n_features}, k={cfg.per_class} in this run "
                     f"to compare with: qpm train --run-dir {printable(summary.run_dir)} "
                     f"--model-type qpm --n-features {cfg.n_features} --per-class "
                     f"{cfg.per_class} trains one)")
    return "\n".join(lines)


def beside_unfrozen(summary) -> list[str]:
    """A frozen backbone taken from another run's dense.pt: that run's accuracies of the
    same model type at the same n and k (its backbone fine-tuned), beside this run's (frozen,
    with the adapter)."""
    from pathlib import Path

    from qpm import run_folder as rf
    from qpm.io import ArtifactError, read_json

    cfg = summary.config
    source = Path(cfg.weights or "")
    if not cfg.frozen_backbone or source.name != rf.DENSE or not source.is_file():
        return []
    try:
        run = rf.open_run(source.parent)
        same = [m for m in run.models if m.model_type == cfg.model_type
                and (run.config_of(m).n_features, run.config_of(m).per_class)
                == (cfg.n_features, cfg.per_class)]  # the same n and k, latest first
        model = max(same, key=lambda m: m.file.stat().st_mtime_ns)
        theirs = read_json(model.folder / rf.METRICS).get(cfg.model_type, {})
        dense = read_json(run.path / rf.METRICS).get("dense", {})
    except (QPMError, ArtifactError, AttributeError, ValueError, OSError):
        return []
    mine = summary.metrics
    label = f", variant {model.variant}" if model.variant else ""
    return [f"the same backbone fine-tuned ({printable(run.path)}{label}): dense "
            f"{_fmt_acc({'d': dense}, 'd')}   {cfg.model_type} {_fmt_acc({'m': theirs}, 'm')}",
            f"frozen backbone + adapter (this run): dense {_fmt_acc(mine, 'dense')}   "
            f"{cfg.model_type} {_fmt_acc(mine, cfg.model_type)}"]


def format_summary(summary) -> str:
    from qpm import run_folder as rf
    from qpm.io import ArtifactError, read_json
    from qpm.run_folder.recipes import describe

    m = summary.metrics
    cfg = summary.config
    out = [f"run folder: {printable(summary.run_dir)}", describe(cfg)]
    if summary.variant_dir != summary.run_dir:
        out.append(f"variant: {printable(summary.variant_dir.name)}")
    out += [f"dense accuracy: {_fmt_acc(m, 'dense')}   "
            f"{cfg.model_type} accuracy: {_fmt_acc(m, cfg.model_type)}   "
            f"(n={cfg.n_features}, k={cfg.per_class}, test top-1)"]
    out += beside_unfrozen(summary)
    out.append("seconds per stage: " + ", ".join(
        f"{s.name} {'-' if s.seconds is None else f'{s.seconds:.1f}'}"
        + (" (skipped)" if s.status == "skipped" else "") for s in summary.stages))
    path = summary.variant_dir / rf.ASSIGNMENT
    model_file = summary.variant_dir / rf.model_file(cfg.model_type)
    if path.exists():  # an assignment: qpm, chiqpm
        try:
            data = read_json(path)
            assignment = {int(c): feats for c, feats in data["assignment"].items()}
            names = rf.class_names(summary.run_dir)
        except (ArtifactError, KeyError, ValueError, TypeError) as exc:
            raise QPMError(f"{path} is unreadable ({exc}).", "Delete it and re-run.") from None
        counts = assignment_counts(assignment, data.get("selected_features", []))
        out.append(f"global explanation: {counts.line()}")
        if counts.warning():
            out.append(counts.warning())
        out += explanation_lines(assignment, names)
    elif model_file.exists():  # a baseline's layer
        from qpm.explain.structure import FeatureCounts
        from qpm.models.checkpoint import load_model

        model, _ = load_model(model_file)
        weight, _ = model.classifier.class_feature_weights()
        counts = FeatureCounts.of(weight.detach().numpy())
        out.append(f"{cfg.model_type} layer: {counts.line()}")
        if counts.warning():
            out.append(counts.warning())
    return "\n".join(out)
