"""Finds the demo's digit sprite in any clip: the shared first step of the digit and motion scores.

The demo draws a near-white sprite (`SPRITE_COLOR`) over a photo dimmed to at most
`BACKGROUND_DIMMING` * 255, so a pixel's darkest channel says how much sprite "ink" it
holds: 0 at or below the brightest possible background, 1 at the sprite's own colour.
Generated or tokenizer-decoded clips blur and tint the sprite, but it stays the brightest,
least saturated thing in the frame, so the same map finds it there too.

Per frame the sprite is the `sprite_size` square window with the most ink (a box filter),
and its position is the ink-weighted centroid over that window grown by a small margin:
sub-pixel, and independent of where the ink sits inside the digit's own box. Centroids
follow the sprite's motion exactly (it is rigid) but sit a constant, digit-dependent
offset from the truth's top-left corner; scores that compare with truth positions remove
that constant.

Shapes: video uint8 [time, height, width, 3]; centroids float64 [time, 2] as (x, y).
"""
from __future__ import annotations

import cv2
import numpy as np

from data_pipelines.demo.clips import BACKGROUND_DIMMING, SPRITE_COLOR

BACKGROUND_MAX = 255.0 * BACKGROUND_DIMMING
SPRITE_MIN = float(SPRITE_COLOR.min())
# A frame whose best window holds less ink than this many fully inked pixels has no sprite.
MIN_INK_PIXELS = 2.0
CENTROID_MARGIN = 2
CROP_SIDE = 8  # sklearn digits are 8x8; sprite crops are resampled to this for the classifier


def check_video(video: np.ndarray, what: str = "video") -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or 0 in video.shape:
        raise ValueError(f"{what} must be uint8 [time, height, width, 3]; got {video.dtype} {video.shape}")
    return video


def sprite_size_for(frame_size: int) -> int:
    """The demo's sprite side for a square frame side (3/8 of it, 12 px at 32 px)."""
    return max(4, int(round(frame_size * 3 / 8)))


def ink_map(video: np.ndarray) -> np.ndarray:
    """float32 [T, H, W] in [0, 1]: how much of each pixel is sprite."""
    darkest = check_video(video).min(axis=-1).astype(np.float32)
    return np.clip((darkest - BACKGROUND_MAX) / (SPRITE_MIN - BACKGROUND_MAX), 0.0, 1.0)


def locate_sprite(video: np.ndarray, sprite_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float64 [T, 2] as (x, y), found bool [T]); NaN where no sprite is found."""
    ink = ink_map(video)
    t, h, w = ink.shape
    if not 1 <= sprite_size <= min(h, w):
        raise ValueError(f"sprite_size {sprite_size} must be in [1, {min(h, w)}] for frames {h}x{w}")
    integral = np.pad(ink, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
    s = sprite_size
    box = integral[:, s:, s:] - integral[:, :-s, s:] - integral[:, s:, :-s] + integral[:, :-s, :-s]
    centroids = np.full([t, 2], np.nan)
    found = np.zeros([t], bool)
    ys, xs = np.mgrid[0:h, 0:w]
    for i in range(t):
        y0, x0 = np.unravel_index(np.argmax(box[i]), box[i].shape)
        if box[i, y0, x0] < MIN_INK_PIXELS:
            continue
        top, left = max(0, y0 - CENTROID_MARGIN), max(0, x0 - CENTROID_MARGIN)
        bottom, right = min(h, y0 + s + CENTROID_MARGIN), min(w, x0 + s + CENTROID_MARGIN)
        weights = ink[i, top:bottom, left:right]
        total = weights.sum()
        centroids[i] = [(weights * xs[top:bottom, left:right]).sum() / total,
                        (weights * ys[top:bottom, left:right]).sum() / total]
        found[i] = True
    return centroids, found


def sprite_crops(video: np.ndarray, centroids: np.ndarray, sprite_size: int) -> np.ndarray:
    """float32 [T, 8, 8] ink crops of side `sprite_size` centred on each centroid.

    Each crop is scaled so its brightest pixel is 1 (blur dims the ink but keeps its shape);
    frames with a NaN centroid give an all-zero crop.
    """
    ink = ink_map(video)
    crops = np.zeros([len(ink), CROP_SIDE, CROP_SIDE], np.float32)
    for i, (frame, centre) in enumerate(zip(ink, np.asarray(centroids, np.float64))):
        if np.any(np.isnan(centre)):
            continue
        patch = cv2.getRectSubPix(frame, (sprite_size, sprite_size), (float(centre[0]), float(centre[1])))
        patch = cv2.resize(patch, (CROP_SIDE, CROP_SIDE), interpolation=cv2.INTER_AREA)
        peak = patch.max()
        if peak > 0:
            crops[i] = patch / peak
    return crops
