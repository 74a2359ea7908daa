"""Synthetic images a small network can learn: what the generated stand-ins of the datasets draw.

Offline runs and tests need data whose classes a ResNet learns in a few CPU epochs (so later
stages show real learning). Each class is one combination of a colour, a shape/texture and a
background; every image jitters position, size and colours and adds noise, so no two are alike.
The stand-ins themselves (`tinyclf.data.formats.<format>.write_stand_in`) wrap these pixels in the
exact official archive layout and mark the archive with MARKER.
"""

from __future__ import annotations

import colorsys

import numpy as np

# Every generated archive carries this mark (a zip comment, a tar member), so whatever is derived
# from it can say it was trained on generated data.
MARKER = "tinyclf-generated"


# --- class design --------------------------------------------------------------------------------
# 10 hues x 10 shapes x 2 backgrounds = 200 distinct classes. Class c uses hue c % 10, shape
# (c % 10 + c // 10) % 10 and background c // 100, a bijection for c < 200; with 10 classes every
# class differs in both hue and shape, which makes them separable even at 32x32.
_SHAPES = ("disc", "square", "triangle", "ring", "plus", "horizontal stripes", "vertical stripes",
           "checkerboard", "diamond", "cross")
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "azure", "blue", "violet", "magenta")
_BACKGROUNDS = ("dark", "light")


def _class_design(c: int) -> tuple[int, int, int]:
    """(hue index, shape index, background index) of class c."""
    return c % 10, (c % 10 + c // 10) % 10, c // 100


def class_description(c: int) -> str:
    hue, shape, bg = _class_design(c)
    # words.txt style: the first comma-separated synonym is the short name plots use.
    return f"{_HUE_NAMES[hue]} {_SHAPES[shape]} on {_BACKGROUNDS[bg]}, generated class {c}"


def _hue_rgb(hue: int) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue / 10, 0.85, 0.92)) * 255


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in coordinates normalised to the shape's half-size (|u|,|v| <= 1)."""
    box = np.maximum(np.abs(u), np.abs(v))
    rad = np.sqrt(u * u + v * v)
    name = _SHAPES[shape]
    if name == "disc":
        return rad <= 1
    if name == "square":
        return box <= 0.85
    if name == "triangle":  # apex up (image v grows downwards)
        return (v <= 0.8) & (np.abs(u) <= (v + 0.9) * 0.56)
    if name == "ring":
        return (rad <= 1) & (rad >= 0.55)
    if name == "plus":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))
    if name == "horizontal stripes":
        return (box <= 0.9) & (np.floor((v + 1) * 2.5) % 2 == 0)
    if name == "vertical stripes":
        return (box <= 0.9) & (np.floor((u + 1) * 2.5) % 2 == 0)
    if name == "checkerboard":
        return (box <= 0.9) & ((np.floor((u + 1) * 2) + np.floor((v + 1) * 2)) % 2 == 0)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if name == "cross":
        return (box <= 0.95) & ((np.abs(u - v) <= 0.4) | (np.abs(u + v) <= 0.4))
    raise AssertionError(name)


def render_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image per label: (uint8 N x size x size x 3 RGB, int N x 4 boxes x0,y0,x1,y1)."""
    n = len(labels)
    images = np.empty((n, size, size, 3), np.uint8)
    boxes = np.empty((n, 4), np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i, label in enumerate(labels):
        hue, shape, bg = _class_design(int(label))
        half = size * rng.uniform(0.26, 0.42)
        cx = rng.uniform(half * 0.8, size - half * 0.8)
        cy = rng.uniform(half * 0.8, size - half * 0.8)
        mask = _shape_mask(shape, (xx - cx) / half, (yy - cy) / half)
        base = rng.uniform(15, 75) if bg == 0 else rng.uniform(165, 225)
        background = base + rng.normal(0, 6, 3)  # a slight tint
        colour = _hue_rgb(hue) * rng.uniform(0.8, 1.08) + rng.normal(0, 10, 3)
        img = np.where(mask[..., None], colour, background) + rng.normal(0, 9, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, size - 1, size - 1)
    return images, boxes
