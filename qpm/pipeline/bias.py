"""The locality bias ``b`` of the QPM objective: prefer features that fire at one place.

From the extraction statistics (per feature, averaged over training images with each image's
relative activation as weight): ``locality`` = the peak of the spatially softmaxed map, and
``edge`` = how often the map's maximum sits on the border. Both are clipped to their main
cluster, centred and scaled; features that peak on the border too often get the lowest
locality value. The result has zero mean and max |b| = sqrt(10) / 10 ~ 0.316.
"""

from __future__ import annotations

import numpy as np

BIAS_SCALE = float(np.sqrt(10) * 0.1)


def main_cluster_range(values: np.ndarray) -> tuple[float, float]:
    """(low, high) of the largest 1-D mean-shift cluster: where the bulk of the values lie."""
    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if x.shape[0] < 3 or np.ptp(x) == 0:
        return float(x.min()), float(x.max())
    from sklearn.cluster import MeanShift, estimate_bandwidth

    # MeanShift's defaults, as the reference uses it: the bandwidth MeanShift would estimate
    # itself (quantile 0.3), every point a seed (no bin seeding).
    bandwidth = estimate_bandwidth(x)
    if not bandwidth > 0:
        return float(x.min()), float(x.max())
    labels = MeanShift(bandwidth=bandwidth).fit(x).labels_
    biggest = np.bincount(labels).argmax()
    members = x[labels == biggest, 0]
    return float(members.min()), float(members.max())


def clip_and_scale(values: np.ndarray, scale: float = BIAS_SCALE) -> np.ndarray:
    """Clip outliers to the main cluster's range, subtract the mean, scale to max|.| = scale."""
    v = np.asarray(values, dtype=np.float64).copy()
    low, high = main_cluster_range(v)
    # Outliers keep their sign but take the cluster edge's magnitude (as the reference does).
    v[v < low] = abs(low) * np.sign(v[v < low])
    v[v > high] = abs(high) * np.sign(v[v > high])
    v -= v.mean()
    top = np.abs(v).max()
    return v / top * scale if top > 0 else np.zeros_like(v)


def locality_bias(locality: np.ndarray, edge: np.ndarray, scale: float = BIAS_SCALE) -> np.ndarray:
    """``b`` (F,) from the weighted mean softmax peak and the weighted border frequency."""
    loc = clip_and_scale(locality, scale)
    border = clip_and_scale(-np.asarray(edge, dtype=np.float64), scale)
    # A feature peaking on the border more than usual is as bad as the least local one.
    combined = np.where(border >= 0, loc, loc.min())
    return clip_and_scale(combined, scale)
