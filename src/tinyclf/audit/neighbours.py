"""Nearest neighbours by cosine similarity, exact, over every audited image at once (train, val and
test together, so a neighbour in another split is found like one in the same split).

The features are first projected onto their top `MAX_DIMS` principal directions: for the
reference model's 2,048 features that makes the all-pairs search 8× cheaper, and the
neighbours it finds are the ones that matter here (near-copies, a class's typical images). An
exact search rather than faiss's approximate indexes keeps the outputs the same from run to run
(the timing against the evaluate stage: docs/benchmarks.md, "The data audit").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_DIMS = 256
QUERY_CHUNK = 512  # rows of the similarity matrix held at once: 512 × N float32


@dataclass(frozen=True)
class Neighbours:
    """For each row: its k most similar other rows (indices, N×k) and their cosine similarities, best first."""

    indices: np.ndarray
    similarities: np.ndarray


def _chunks(parts: list[np.ndarray], chunk: int):
    for part in parts:
        for start in range(0, len(part), chunk):
            yield np.asarray(part[start:start + chunk], np.float64)


def project(parts: list[np.ndarray], max_dims: int = MAX_DIMS, chunk: int = 8192) -> np.ndarray:
    """The rows of `parts` (one N_i×D array per split, in order), centered, on their top principal
    directions, unit length: one (ΣN_i)×min(D, max_dims) float32 array.

    The covariance is summed chunk by chunk from the (memory-mapped) float16 features, so memory is
    one chunk plus D×D besides the result."""
    n, dims = sum(len(p) for p in parts), parts[0].shape[1]
    mean = sum(block.sum(axis=0) for block in _chunks(parts, chunk)) / max(n, 1)
    basis = np.eye(dims)
    if dims > max_dims:
        cov = np.zeros((dims, dims), np.float64)
        for block in _chunks(parts, chunk):
            centered = block - mean
            cov += centered.T @ centered
        _, vectors = np.linalg.eigh(cov)
        basis = vectors[:, ::-1][:, :max_dims]  # eigh sorts ascending
    out = np.empty((n, basis.shape[1]), np.float32)
    row = 0
    for block in _chunks(parts, chunk):
        out[row:row + len(block)] = (block - mean) @ basis
        row += len(block)
    return unit_rows(out)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def nearest(vectors: np.ndarray, k: int) -> Neighbours:
    """Each row's `k` nearest other rows of `vectors` (unit rows) by cosine similarity."""
    n = len(vectors)
    k = min(k, n - 1)
    base = torch.from_numpy(np.ascontiguousarray(vectors))
    indices = np.empty((n, k), np.int64)
    similarities = np.empty((n, k), np.float32)
    for start in range(0, n, QUERY_CHUNK):
        sims = base[start:start + QUERY_CHUNK] @ base.T
        rows = torch.arange(len(sims))
        sims[rows, rows + start] = -float("inf")  # not its own neighbour
        top = torch.topk(sims, k, dim=1)
        indices[start:start + len(sims)] = top.indices.numpy()
        similarities[start:start + len(sims)] = top.values.numpy()
    return Neighbours(indices, similarities)
