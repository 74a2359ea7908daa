"""Near-duplicates within and across splits: resized, recompressed, slightly cropped or brightened
copies of one photo.

Candidates are each image's nearest neighbours by the model's features and by its pixels (a
12×12 colour thumbnail, mean removed, so a brightened copy stays close); a candidate pair is
reported when the pixels agree (thumbnail cosine ≥ `audit.duplicate_pixel_similarity`) and a
perceptual hash confirms it (imagehash's pHash, Hamming distance ≤ `audit.duplicate_hash_distance`
of 64 bits). The decision never reads the model's features, so how well the model was trained does
not change which copies are found; the features only add candidates (recall and false pairs
measured on real photos: docs/benchmarks.md, "The data audit").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tinyclf.audit.neighbours import Neighbours, nearest, unit_rows

THUMB_SIDE = 12
PIXEL_NEIGHBOURS = 3  # a copy is its original's nearest thumbnail in practice; 3 leaves room
CHUNK = 4096


@dataclass(frozen=True)
class DuplicatePairs:
    """Confirmed pairs (first, second) of global row indices (first < second), with the thumbnail
    similarity and the pHash distance of each."""

    pairs: np.ndarray
    pixel_similarity: np.ndarray
    hash_distance: np.ndarray


def thumbnails(images: np.ndarray) -> np.ndarray:
    """N×(12·12·3) unit vectors of the images' small colour thumbnails, each with its mean removed."""
    out = np.empty((len(images), THUMB_SIDE * THUMB_SIDE * 3), np.float32)
    for start in range(0, len(images), CHUNK):
        block = np.asarray(images[start:start + CHUNK])
        small = np.stack([cv2.resize(img, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
                          for img in block]).reshape(len(block), -1).astype(np.float32)
        out[start:start + len(block)] = small - small.mean(axis=1, keepdims=True)
    return unit_rows(out)


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """imagehash's pHash of one HWC uint8 image, as 64 booleans."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(image)).hash.reshape(-1)


def find_duplicates(thumbs: np.ndarray, feature_neighbours: Neighbours, image_at, *, min_pixel_similarity: float,
                    max_hash_distance: int) -> DuplicatePairs:
    """Confirmed near-duplicate pairs among all rows; `image_at(i)` returns row i's pixels."""
    pixel_neighbours = nearest(thumbs, PIXEL_NEIGHBOURS)
    candidates = _candidate_pairs(feature_neighbours.indices, pixel_neighbours.indices)
    similarity = np.einsum("ij,ij->i", thumbs[candidates[:, 0]], thumbs[candidates[:, 1]])
    keep = similarity >= min_pixel_similarity
    candidates, similarity = candidates[keep], similarity[keep]
    hashes = {row: perceptual_hash(image_at(row)) for row in np.unique(candidates)}
    distance = np.array([int((hashes[a] != hashes[b]).sum()) for a, b in candidates], np.int64)
    confirmed = distance <= max_hash_distance
    return DuplicatePairs(candidates[confirmed], similarity[confirmed], distance[confirmed])


def _candidate_pairs(*neighbour_indices: np.ndarray) -> np.ndarray:
    """Unique (i, j), i < j, of every row with each of its neighbours, sorted."""
    pairs = []
    for indices in neighbour_indices:
        rows = np.repeat(np.arange(len(indices)), indices.shape[1])
        pairs.append(np.stack([rows, indices.reshape(-1)], axis=1))
    pairs = np.concatenate(pairs)
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
