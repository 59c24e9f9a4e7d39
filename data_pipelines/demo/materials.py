"""The real pictures the embedded demo is made from, all bundled with installed packages.

Digits: scikit-learn's `load_digits` (1,797 handwritten 8x8 digits, values 0..16, from the
UCI optdigits set). Backgrounds: photos bundled with scikit-image whose licences are CC0 or
public domain (skimage.data documents each: NASA images are public domain, the others were
contributed under CC0). Nothing is downloaded.

Splits are disjoint in digit images: the images are cut into contiguous blocks
(train 80%, validation 10%, test 10%) in their stored order. sklearn's copy does not carry
writer ids, so "unseen writers" cannot be guaranteed; contiguous blocks keep writers apart
as far as the stored order groups them, and the images themselves never repeat across splits.
"""
from __future__ import annotations

import functools

import numpy as np

SPLITS = ("train", "validation", "test")
_SPLIT_FRACTIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}

# Caption name -> skimage.data loader name. All ship inside the scikit-image wheel.
BACKGROUNDS = {
    "astronaut": "astronaut",
    "coffee": "coffee",
    "cat": "chelsea",
    "rocket": "rocket",
    "galaxy": "hubble_deep_field",
    "camera": "camera",
    "coins": "coins",
    "grass": "grass",
}


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"demo split must be one of {SPLITS}, got {split!r}")


@functools.lru_cache(maxsize=None)
def digit_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images float32 [n, 8, 8] in [0, 1], labels int [n], global image indices int [n])."""
    check_split(split)
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.target)
    lo, hi = _SPLIT_FRACTIONS[split]
    index = np.arange(int(round(lo * n)), int(round(hi * n)))
    images = (digits.images[index] / 16.0).astype(np.float32)
    return images, digits.target[index].astype(np.int64), index


@functools.lru_cache(maxsize=None)
def background_photo(name: str) -> np.ndarray:
    """uint8 [H, W, 3] photo for a caption name of `BACKGROUNDS` (grey photos become RGB)."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown demo background {name!r}; known: {sorted(BACKGROUNDS)}")
    import skimage.data

    photo = np.asarray(getattr(skimage.data, BACKGROUNDS[name])())
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=-1)
    photo = photo[..., :3].astype(np.uint8)
    photo.setflags(write=False)
    return photo
