"""Outliers: images unlike any other (a blank frame, a screenshot, noise among the dogs), scored twice:
by the cosine distance to their k-th nearest neighbour (`audit.neighbours`) in the model's feature
space, and the same among the pixels' thumbnails (a blank frame's thumbnail, its mean removed, is
like no photo's; a weak model's features may place it among the rest).

Each score is measured against its own spread: how many interquartile ranges it lies above the
third quartile of all the images' scores. An image's score is the larger of the two, and it is
reported beyond `audit.outlier_fence` (3: Tukey's far fence). A fence read from the data itself,
so a clean folder reports few or none, rather than a fixed share reported whatever the data holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyclf.audit.neighbours import Neighbours


@dataclass(frozen=True)
class Outliers:
    scores: np.ndarray  # per row: interquartile ranges above the third quartile, features or pixels
    flagged: np.ndarray  # rows beyond the fence, most distant first


def beyond_quartile(neighbours: Neighbours) -> np.ndarray:
    """Each row's distance to its k-th neighbour, in interquartile ranges above the third quartile."""
    distance = 1.0 - neighbours.similarities[:, -1].astype(np.float64)
    q1, q3 = np.percentile(distance, [25, 75])
    return (distance - q3) / max(q3 - q1, 1e-12)


def find_outliers(feature_neighbours: Neighbours, pixel_neighbours: Neighbours, fence: float) -> Outliers:
    scores = np.maximum(beyond_quartile(feature_neighbours), beyond_quartile(pixel_neighbours))
    beyond = np.nonzero(scores > fence)[0]
    return Outliers(scores=scores, flagged=beyond[np.argsort(-scores[beyond], kind="stable")])
