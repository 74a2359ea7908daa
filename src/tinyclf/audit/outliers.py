"""Outliers: images unlike any other (a blank frame, a screenshot, noise among the dogs), found two
ways, each from the distance to the k-th nearest other image (`audit.neighbours`):

- in the model's feature space, against the spread of all the images' distances: beyond
  `audit.outlier_fence` interquartile ranges above the third quartile (3: Tukey's far fence), a
  limit read from the data itself, so a clean folder reports few or none;
- among the pixels' thumbnails (each channel's mean removed: a blank frame of any colour is the
  zero vector), where a weak model's features may place a blank frame or noise among the photos:
  when even the k-th most similar thumbnail has cosine below `PIXEL_ALONE`. Cosines are bounded, so
  a fence from quartiles can lie beyond every possible distance; an absolute limit cannot.

`score` is how far beyond its limit an image lies, in whichever way is further: 1 at the limit, and
an image is reported above 1, most distant first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyclf.audit.neighbours import Neighbours

# The lowest 5th-neighbour thumbnail cosine among 30,000 real photos of the subset was 0.245, a
# blank frame's is 0, noise's 0.14-0.19 (docs/benchmarks.md, "The data audit").
PIXEL_ALONE = 0.2


@dataclass(frozen=True)
class Outliers:
    scores: np.ndarray  # per row: how far beyond the limit (1 = at it), features or pixels
    flagged: np.ndarray  # rows beyond it, most distant first


def feature_scores(neighbours: Neighbours, fence: float) -> np.ndarray:
    """Each row's distance to its k-th neighbour in interquartile ranges above the third quartile, per fence."""
    distance = 1.0 - neighbours.similarities[:, -1].astype(np.float64)
    q1, q3 = np.percentile(distance, [25, 75])
    return (distance - q3) / max(q3 - q1, 1e-12) / max(fence, 1e-9)


def pixel_scores(neighbours: Neighbours) -> np.ndarray:
    """1 - the k-th neighbour's thumbnail cosine, per (1 - PIXEL_ALONE)."""
    return (1.0 - neighbours.similarities[:, -1].astype(np.float64)) / (1.0 - PIXEL_ALONE)


def find_outliers(feature_neighbours: Neighbours, pixel_neighbours: Neighbours, fence: float) -> Outliers:
    scores = np.maximum(feature_scores(feature_neighbours, fence), pixel_scores(pixel_neighbours))
    beyond = np.nonzero(scores > 1.0)[0]
    return Outliers(scores=scores, flagged=beyond[np.argsort(-scores[beyond], kind="stable")])
