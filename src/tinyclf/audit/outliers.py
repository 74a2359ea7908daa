"""Outliers: images unlike any other (a blank frame, a screenshot, noise among the dogs), scored by
the cosine distance to their k-th nearest neighbour in feature space (`audit.neighbours`).

An image is reported when its score lies beyond Tukey's far fence of all the scores (Q3 +
`audit.outlier_fence` × the interquartile range): a fence read from the data itself, so a clean
folder reports few or none, rather than a fixed share reported whatever the data holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyclf.audit.neighbours import Neighbours


@dataclass(frozen=True)
class Outliers:
    scores: np.ndarray  # per row: 1 - cosine similarity to its k-th nearest neighbour
    fence: float
    flagged: np.ndarray  # rows beyond the fence, most distant first


def find_outliers(neighbours: Neighbours, fence: float) -> Outliers:
    scores = 1.0 - neighbours.similarities[:, -1].astype(np.float64)
    q1, q3 = np.percentile(scores, [25, 75])
    limit = float(q3 + fence * (q3 - q1))
    beyond = np.nonzero(scores > limit)[0]
    return Outliers(scores=scores, fence=limit, flagged=beyond[np.argsort(-scores[beyond], kind="stable")])
