"""Which test images calibrate and which measure coverage: the two never overlap.

    stratified  (default) a seeded random share of each class's test images calibrates
    reference   the CHiQPM reference's rule, for reproducing its tables: image i calibrates
                when i mod floor(N / C) < 10, i.e. the first 10 of every block of N / C
                images, which is "the first 10 images of each class" when the test set is
                sorted by class with equally many images per class (CUB is sorted but not
                balanced: 11 to 30 images per class, so its blocks drift across classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpm.errors import QPMError

SPLIT_RULES = ("stratified", "reference")
REFERENCE_PER_BLOCK = 10  # the reference's cal_size
DEFAULT_FRACTION = 0.5


@dataclass(frozen=True)
class Split:
    """Indices into the test set: ``calibration`` and ``evaluation`` (disjoint, sorted)."""

    rule: str
    calibration: np.ndarray
    evaluation: np.ndarray
    seed: int | None = None
    fraction: float | None = None

    def describe(self) -> str:
        """One line for every output that reports coverage."""
        n_cal, n_ev = len(self.calibration), len(self.evaluation)
        if self.rule == "reference":
            how = (f"the reference's split (image i calibrates when i mod floor(N/C) < "
                   f"{REFERENCE_PER_BLOCK})")
        else:
            how = (f"a stratified random {100 * (self.fraction or 0):g}% of each class "
                   f"(seed {self.seed})")
        return (f"calibration: {how} of the test set, {n_cal} images; coverage measured on "
                f"the other {n_ev}")

    def to_dict(self) -> dict:
        return {"rule": self.rule, "seed": self.seed, "fraction": self.fraction,
                "n_calibration": len(self.calibration), "n_evaluation": len(self.evaluation)}


def stratified_split(labels: np.ndarray, fraction: float = DEFAULT_FRACTION,
                     seed: int = 0) -> Split:
    """Per class, a random ``fraction`` of its images (rounded; at least one, and one left
    for evaluation when the class has two or more) calibrates."""
    if not 0.0 < fraction < 1.0:
        raise QPMError(f"The calibration share must lie strictly between 0 and 1, got "
                       f"{fraction}.", "Pass e.g. --calibration-share 0.5.")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    cal = []
    for c in np.unique(y):
        own = rng.permutation(np.flatnonzero(y == c))
        take = max(int(fraction * own.size + 0.5), 1)  # round half up, at least one
        if own.size >= 2:
            take = min(take, own.size - 1)
        cal.append(own[:take])
    return _split("stratified", np.concatenate(cal) if cal else np.zeros(0, int), y.size,
                  seed=seed, fraction=float(fraction))


def reference_split(n_images: int, n_classes: int, per_block: int = REFERENCE_PER_BLOCK
                    ) -> Split:
    """The reference's ``get_logits_and_labels(..., cal_size=10)`` (conformalPrediction/
    eval_cp.py): image i calibrates when ``i % (N // C) < per_block``."""
    block = n_images // max(n_classes, 1)
    if block <= per_block:
        raise QPMError(f"The reference's split needs more than {per_block} test images per "
                       f"class on average; this test set has {n_images} for {n_classes} "
                       "classes, so nothing would be left to measure coverage on.",
                       "Use --calibration stratified.")
    i = np.arange(n_images)
    return _split("reference", i[i % block < per_block], n_images)


def make_split(rule: str, labels: np.ndarray, n_classes: int, *, seed: int = 0,
               fraction: float = DEFAULT_FRACTION) -> Split:
    if rule == "stratified":
        return stratified_split(labels, fraction, seed)
    if rule == "reference":
        return reference_split(len(labels), n_classes)
    raise QPMError(f"Unknown calibration split {rule!r}.",
                   f"Choose one of: {', '.join(SPLIT_RULES)}.")


def _split(rule: str, calibration: np.ndarray, n: int, **how) -> Split:
    cal = np.sort(np.asarray(calibration, dtype=np.int64))
    mask = np.ones(n, dtype=bool)
    mask[cal] = False
    if cal.size == 0 or not mask.any():
        raise QPMError(f"A {rule} split of {n} test images leaves one side empty.",
                       "Use a test set with at least two images per class.")
    return Split(rule, cal, np.flatnonzero(mask), **how)
