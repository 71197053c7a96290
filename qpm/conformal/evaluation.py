"""How good the prediction sets are: empirical coverage, average size and, where class
attributes exist (CUB), SetCoherence; for several methods at several target coverages."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qpm.conformal.methods import Outputs, Threshold, get_method
from qpm.conformal.quantile import Bound, bound_note
from qpm.conformal.splits import Split, stratified_split

TARGETS = (0.88, 0.90, 0.925, 0.95)  # the reference's table


def cosine_similarity(attributes: np.ndarray) -> np.ndarray:
    """(C, C) cosine similarity of the class-attribute rows (diagonal 1)."""
    a = np.asarray(attributes, dtype=np.float64)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    unit = a / np.where(norm > 0, norm, 1.0)
    return unit @ unit.T


def set_coherence(sets: np.ndarray, class_similarity: np.ndarray) -> float | None:
    """The reference's SetCoherence: the mean similarity over every ordered pair of distinct
    classes of every set with at least two classes, pooled (a set of s classes adds
    s(s-1) pairs); None when no set has two classes."""
    x = np.asarray(sets, dtype=np.float64)
    s = np.asarray(class_similarity, dtype=np.float64)
    size = x.sum(axis=1)
    x = x[size >= 2]
    if x.shape[0] == 0:
        return None
    pairs = float((size[size >= 2] * (size[size >= 2] - 1)).sum())
    total = float(np.einsum("ic,cd,id->", x, s, x) - (x * np.diag(s)).sum())
    return total / pairs


@dataclass(frozen=True)
class SetMetrics:
    coverage: float  # share of images whose true class is in their set
    size: float  # average number of classes per set
    coherence: float | None  # SetCoherence (None without class attributes)
    n: int  # images measured

    def to_dict(self) -> dict:
        return asdict(self)


def set_metrics(sets: np.ndarray, labels: np.ndarray,
                class_similarity: np.ndarray | None = None) -> SetMetrics:
    sets = np.asarray(sets, dtype=bool)
    y = np.asarray(labels, dtype=np.int64)
    covered = sets[np.arange(len(y)), y]
    return SetMetrics(float(covered.mean()) if len(y) else float("nan"),
                      float(sets.sum(axis=1).mean()) if len(y) else float("nan"),
                      None if class_similarity is None else set_coherence(sets,
                                                                          class_similarity),
                      int(len(y)))


@dataclass(frozen=True)
class Repeated:
    """Coverage and size averaged over ``repeats`` random stratified splits (each its own
    calibration): the estimate of E[coverage] the bound speaks of, with its standard error."""

    coverage: float
    coverage_se: float
    size: float
    repeats: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    """Every method at every target on one split: ``results[method][target]``; with
    ``repeated`` also the average over random splits."""

    split: Split
    results: dict[str, dict[float, SetMetrics]]
    thresholds: dict[str, dict[float, Threshold]]
    repeated: dict[str, dict[float, Repeated]] | None = None

    def to_dict(self) -> dict:
        def row(m: str, t: float) -> dict:
            d = {**self.results[m][t].to_dict(), "target": t,
                 "threshold": self.thresholds[m][t].to_dict(),
                 "bound": [t, Bound(t, len(self.split.calibration)).upper]}
            if self.repeated:
                d["repeated"] = self.repeated[m][t].to_dict()
            return d

        return {"split": self.split.to_dict(), "split_text": self.split.describe(),
                "methods": {m: {f"{t:g}": row(m, t) for t in by}
                            for m, by in self.results.items()}}


def _one_split(out: Outputs, y: np.ndarray, split: Split, name: str, target: float,
               seed: int, class_similarity: np.ndarray | None
               ) -> tuple[SetMetrics, Threshold]:
    m = get_method(name)
    rng = np.random.default_rng(seed)  # the same draws for every target
    th = m.calibrate(out.take(split.calibration), y[split.calibration], target, rng)
    sets = m.sets(out.take(split.evaluation), th, rng)
    return set_metrics(sets, y[split.evaluation], class_similarity), th


def evaluate(out: Outputs, labels: np.ndarray, split: Split, methods: list[str],
             targets: tuple[float, ...] = TARGETS, class_similarity: np.ndarray | None = None,
             seed: int = 0, repeats: int = 0) -> Report:
    """Calibrate each method at each target on ``split.calibration``, measure its sets on
    ``split.evaluation``; with ``repeats`` (a stratified split only) also average coverage
    and size over that many stratified splits of the same share, seeds ``split.seed`` on."""
    y = np.asarray(labels, dtype=np.int64)
    if "hierarchical" in methods:
        out.path_stats()  # once, for every split below
    results: dict[str, dict[float, SetMetrics]] = {m: {} for m in methods}
    thresholds: dict[str, dict[float, Threshold]] = {m: {} for m in methods}
    for name in methods:
        for t in targets:
            results[name][t], thresholds[name][t] = _one_split(out, y, split, name, t, seed,
                                                               class_similarity)
    repeated = None
    if repeats and split.rule == "stratified":
        splits = [stratified_split(y, split.fraction, (split.seed or 0) + r)
                  for r in range(repeats)]
        repeated = {m: {t: _average([_one_split(out, y, s, m, t, seed + r, None)[0]
                                     for r, s in enumerate(splits)]) for t in targets}
                    for m in methods}
    return Report(split, results, thresholds, repeated)


def _average(runs: list[SetMetrics]) -> Repeated:
    cov = np.array([r.coverage for r in runs])
    se = float(cov.std(ddof=1) / np.sqrt(len(cov))) if len(cov) > 1 else float("nan")
    return Repeated(float(cov.mean()), se, float(np.mean([r.size for r in runs])), len(runs))


def format_report(report: Report, title: str = "") -> str:
    """A plain-text table: one row per method and target."""
    has_coherence = any(r.coherence is not None for by in report.results.values()
                        for r in by.values())
    rep = report.repeated
    head = ["method", "target", "coverage", "avg size"] + (["SetCoherence"] if has_coherence
                                                          else [])
    if rep:
        r0 = next(iter(next(iter(rep.values())).values()))
        head += [f"mean of {r0.repeats} splits (+-se)", "size"]
    head += ["E[coverage] bound", "q_hat"]
    rows = [head]
    n = len(report.split.calibration)
    for name, by in report.results.items():
        for t, r in by.items():
            th = report.thresholds[name][t]
            b = Bound(t, n)
            q = "inf" if np.isinf(th.q_hat) else f"{th.q_hat + 0.0:.4g}"  # no "-0"
            if th.level is not None:
                q += f" (level {th.level})"
            row = [get_method(name).title, f"{t:g}", f"{r.coverage:.4f}", f"{r.size:.2f}"]
            if has_coherence:
                row.append("n/a" if r.coherence is None else f"{r.coherence:.3f}")
            if rep:
                a = rep[name][t]
                row += [f"{a.coverage:.4f} +- {a.coverage_se:.4f}", f"{a.size:.2f}"]
            rows.append(row + [f"[{t:.4f}, {b.upper:.4f})", q])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [bound_note()]
    full = [t for t, th in report.thresholds.get("hierarchical", {}).items()
            if th.level is not None and th.level == len(th.path_accuracy)]
    if full:
        notes.append(f"hierarchical at {', '.join(f'{t:g}' for t in full)}: level k keeps "
                     "only the predicted class (the classes on its whole path tie), so its "
                     "coverage is the top-1 accuracy and can exceed the upper bound")
    return "\n".join(([title] if title else []) + [report.split.describe()] + lines + notes)
