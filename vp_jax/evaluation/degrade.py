"""Degradations that mimic a tokenizer's losses: blur, a resolution round trip, noise.

Used twice: to augment the digit classifier's training crops (so it reads blurred sprites)
and to measure how robust each scorer is (tests, bench/eval_scorer_robustness.py). A
tokenizer at the demo's size loses fine detail first, which is what all three do.

Shapes: video uint8 [time, height, width, 3] in, same shape and dtype out.
"""
from __future__ import annotations

import cv2
import numpy as np

from vp_jax.evaluation.sprite import check_video


def gaussian_blur(video: np.ndarray, sigma: float) -> np.ndarray:
    """Per-frame Gaussian blur of `sigma` pixels (0 = unchanged)."""
    video = check_video(video)
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return video.copy()
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                      borderType=cv2.BORDER_REFLECT) for f in video])


def resize_round_trip(video: np.ndarray, factor: int) -> np.ndarray:
    """Down-samples by `factor` (area) and back up (bilinear): 32 -> 32/factor -> 32."""
    video = check_video(video)
    _, h, w, _ = video.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"resize factor must be a positive divisor of {h}x{w}, got {factor}")
    if factor == 1:
        return video.copy()
    small = [cv2.resize(f, (w // factor, h // factor), interpolation=cv2.INTER_AREA) for f in video]
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in small])


def add_noise(video: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Adds i.i.d. Gaussian noise of `sigma` grey levels, clipped to uint8."""
    video = check_video(video)
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    noisy = video.astype(np.float32) + rng.normal(0.0, sigma, video.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
