"""tinyclf.data.formats.synthetic: the images every stand-in draws are learnable: each class's
colour, shape and background set it clearly apart (training on them shows the rest)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image


def test_classes_differ_in_pixels(generated_tiny_zip):
    """Not a learnability proof (training shows that), but class means must differ clearly."""
    with zipfile.ZipFile(generated_tiny_zip) as zf:
        means = []
        for c in range(10):
            w = f"g{c:07d}"
            imgs = [np.asarray(Image.open(io.BytesIO(zf.read(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG")))
                               .convert("RGB"), np.float32) for i in range(10)]
            means.append(np.mean([im.reshape(-1, 3).max(0) for im in imgs], 0))  # the dominant bright colour
    means = np.array(means)
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(10) * 1e9
    assert dist.min() > 20, dist.min()
