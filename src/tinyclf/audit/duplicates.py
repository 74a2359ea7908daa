"""Near-duplicates within and across splits: resized, recompressed, slightly cropped or brightened
copies of one photo.

Candidates are each image's nearest neighbours by the model's features and by its pixels (a
12×12 colour thumbnail, mean removed, so a brightened copy stays close). A candidate pair whose
thumbnails are roughly alike (cosine ≥ `PREFILTER`) is then aligned: each image is compared with
the other's whole frame and 18 crops of it (90% and 95% of each side, at the corners, edges and
centre), because a cropped copy's plain thumbnail and hash drift apart as much as two different
photos'. The pair is reported when the best alignment's thumbnails agree (cosine ≥
`audit.duplicate_pixel_similarity`) and a perceptual hash confirms it there (imagehash's pHash of
the aligned crop and of the other image, Hamming distance ≤ `audit.duplicate_hash_distance` of 64
bits). The decision never reads the model's features, so how well the model was trained does not
change which copies are found; the features only add candidates (recall and false pairs measured
on real photos: docs/benchmarks.md, "The data audit").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tinyclf.audit.neighbours import Neighbours, unit_rows

THUMB_SIDE = 12
PREFILTER = 0.75  # plain thumbnail cosine below which no alignment is tried (5%-cropped copies: 0.81 and up)
CROP_SIDES = (0.95, 0.9)  # the crops tried when aligning, as shares of each side
CHUNK = 4096


@dataclass(frozen=True)
class DuplicatePairs:
    """Confirmed pairs (first, second) of global row indices (first < second), with the thumbnail
    similarity and the pHash distance of each."""

    pairs: np.ndarray
    pixel_similarity: np.ndarray
    hash_distance: np.ndarray


def thumbnails(images, *, per_channel: bool = False) -> np.ndarray:
    """N×(12·12·3) unit vectors of the images' small colour thumbnails, each with its mean removed
    (each channel's own mean with `per_channel`: then a blank frame of any colour is the zero vector,
    like no photo, where one overall mean would leave its colour cast, which matches any photo of
    that cast)."""
    out = np.empty((len(images), THUMB_SIDE * THUMB_SIDE * 3), np.float32)
    for start in range(0, len(images), CHUNK):
        block = images[start:start + CHUNK]
        out[start:start + len(block)] = _raw_thumbnails(block, per_channel)
    return unit_rows(out)


def _raw_thumbnails(images, per_channel: bool = False) -> np.ndarray:
    small = np.stack([cv2.resize(np.ascontiguousarray(img), (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
                      for img in images]).astype(np.float32)
    means = small.mean(axis=(1, 2), keepdims=True) if per_channel else small.mean(axis=(1, 2, 3), keepdims=True)
    return (small - means).reshape(len(images), -1)


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """imagehash's pHash of one HWC uint8 image, as 64 booleans."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(np.ascontiguousarray(image))).hash.reshape(-1)


def crops(image: np.ndarray) -> list[np.ndarray]:
    """The image and its crops of CROP_SIDES of each side at the 9 anchor points (corners, edges, centre)."""
    h, w = image.shape[:2]
    out = [image]
    for side in CROP_SIDES:
        ch, cw = int(round(h * side)), int(round(w * side))
        for top in (0, (h - ch) // 2, h - ch):
            for left in (0, (w - cw) // 2, w - cw):
                out.append(image[top:top + ch, left:left + cw])
    return out


def aligned_similarities(pairs: np.ndarray, image_at) -> np.ndarray:
    """Each pair's best aligned thumbnail cosine (each image's crops against the other's whole frame),
    the crops' thumbnails made once per image per chunk of pairs: a few microseconds a pair, so only
    the pairs that pass go on to the perceptual hash, the costly part."""
    out = np.empty(len(pairs), np.float64)
    for start in range(0, len(pairs), CHUNK):
        chunk = pairs[start:start + CHUNK]
        cropped = {row: unit_rows(_raw_thumbnails(crops(image_at(row)))) for row in np.unique(chunk).tolist()}
        for i, (a, b) in enumerate(chunk.tolist()):
            out[start + i] = max(float((cropped[a] @ cropped[b][0]).max()), float((cropped[b] @ cropped[a][0]).max()))
    return out


def aligned_match(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(thumbnail cosine, pHash distance) of the pair at its best alignment: each image's crops
    against the other's whole frame, the crop resized back to the frame's size for the hash."""
    whole = unit_rows(_raw_thumbnails([a, b]))
    best, pair = -2.0, (a, b)
    for crop_of, other, other_thumb in ((a, b, whole[1]), (b, a, whole[0])):
        candidates = crops(crop_of)
        similarity = unit_rows(_raw_thumbnails(candidates)) @ other_thumb
        at = int(np.argmax(similarity))
        if similarity[at] > best:
            best, pair = float(similarity[at]), (candidates[at], other)
    crop, other = pair
    resized = cv2.resize(np.ascontiguousarray(crop), (other.shape[1], other.shape[0]), interpolation=cv2.INTER_AREA)
    return best, int((perceptual_hash(resized) != perceptual_hash(other)).sum())


def find_duplicates(thumbs: np.ndarray, neighbours: tuple[Neighbours, Neighbours], image_at, *,
                    min_pixel_similarity: float, max_hash_distance: int) -> DuplicatePairs:
    """Confirmed near-duplicate pairs among all rows, from each row's (feature, thumbnail) neighbours;
    `image_at(i)` returns row i's pixels."""
    candidates = _candidate_pairs(*(n.indices for n in neighbours))
    plain = np.einsum("ij,ij->i", thumbs[candidates[:, 0]], thumbs[candidates[:, 1]])
    candidates = candidates[plain >= PREFILTER]
    candidates = candidates[aligned_similarities(candidates, image_at) >= min_pixel_similarity]
    matches = [aligned_match(image_at(a), image_at(b)) for a, b in candidates]
    similarity = np.array([m[0] for m in matches], np.float64)
    distance = np.array([m[1] for m in matches], np.int64)
    confirmed = (similarity >= min_pixel_similarity) & (distance <= max_hash_distance)
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
