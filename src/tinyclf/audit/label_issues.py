"""Likely label issues: cleanlab's confident learning over out-of-sample predicted probabilities.

cleanlab needs probabilities the model did not fit to the label being judged: a network's
probabilities on its own training images are overconfident (it has learned the wrong label too),
which hides exactly the errors sought. Val and test images are out of sample as they are (val chose
the epoch, not the weights). For train, `audit.train_probs` picks:

- `logistic` (default): a logistic-regression head on the model's features, fitted `audit.folds`
  times, each time on the other folds' images, predicting the held-out fold: seconds, not a retraining;
- `knn`: the labels of each image's nearest neighbours in feature space (itself excluded),
  weighted by similarity: nearly free once the neighbours are known;
- `model`: the network's own (in-sample) probabilities, to measure what the other two buy.

Which is better, with figures: docs/benchmarks.md, "The data audit".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from tinyclf.audit.neighbours import Neighbours

KNN_VOTERS = 20  # neighbours whose labels vote: with 5, a quarter of a real folder's images tied at no votes
KNN_TEMPERATURE = 0.05  # similarity → vote weight exp(sim / T): the nearest neighbours count most
PROB_FLOOR = 1e-6  # no class is impossible: cleanlab's thresholds divide by per-class averages


@dataclass(frozen=True)
class LabelIssues:
    """Per image: whether cleanlab flags it, its label quality (self-confidence: the out-of-sample
    probability of the given label; low is suspect) and the suggested label (the most probable class)."""

    flagged: np.ndarray
    quality: np.ndarray
    suggested: np.ndarray


def cross_validated_probs(vectors: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Each row's class probabilities from a logistic regression fitted on the other folds (stratified)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    num_classes = int(labels.max()) + 1
    probs = np.zeros((len(labels), num_classes), np.float64)
    smallest = np.bincount(labels, minlength=num_classes)
    folds = max(2, min(folds, int(smallest[smallest > 0].min())))
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(vectors, labels):
        head = LogisticRegression(max_iter=300, C=1.0)
        with warnings.catch_warnings():  # a head stopped at max_iter still ranks the labels; no log noise
            warnings.simplefilter("ignore", ConvergenceWarning)
            head.fit(vectors[fit_rows], labels[fit_rows])
        probs[np.ix_(held_rows, head.classes_)] = head.predict_proba(vectors[held_rows])
    return _floor(probs)


def knn_probs(neighbours: Neighbours, labels: np.ndarray, num_classes: int, rows: np.ndarray) -> np.ndarray:
    """Class probabilities of `rows` from their neighbours' labels among the rows in `labels` (-1 = not a voter)."""
    probs = np.zeros((len(rows), num_classes), np.float64)
    weights = np.exp((neighbours.similarities[rows] - 1.0) / KNN_TEMPERATURE)
    votes = labels[neighbours.indices[rows]]
    for column in range(votes.shape[1]):
        voter = votes[:, column] >= 0
        np.add.at(probs, (np.nonzero(voter)[0], votes[voter, column]), weights[voter, column])
    totals = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, totals, out=np.full_like(probs, 1.0 / num_classes), where=totals > 0)
    return _floor(probs)


def _floor(probs: np.ndarray) -> np.ndarray:
    probs = np.maximum(probs, PROB_FLOOR)
    return probs / probs.sum(axis=1, keepdims=True)


def find_label_issues(labels: np.ndarray, probs: np.ndarray, groups: list[np.ndarray]) -> LabelIssues:
    """cleanlab's `find_label_issues` (prune by noise rate) and its self-confidence scores, in one process.

    cleanlab estimates how many labels are wrong from how confident the probabilities are, so each
    group of rows whose probabilities come from one source (train's cross-validated head; the
    network on held-out images, which is sharper) is judged on its own: pooled, the sharper source
    set the thresholds for both (on generated data, 32 of 50 planted flips flagged instead of 39).
    """
    from cleanlab.filter import find_label_issues as cleanlab_find
    from cleanlab.rank import get_label_quality_scores

    flagged = np.zeros(len(labels), bool)
    for rows in (g for g in groups if len(g)):
        with warnings.catch_warnings():  # a class with few images in a group: said per class, not useful here
            warnings.filterwarnings("ignore", message="May not flag all label issues")
            flagged[rows] = cleanlab_find(labels[rows], probs[rows], n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    return LabelIssues(flagged=flagged, quality=np.asarray(quality, np.float64), suggested=probs.argmax(axis=1))
