"""Masked clips for the inpainting and outpainting tasks.

Inpainting conditions on the clip with its central box masked; outpainting on the clip with
everything but that central box masked (paper section 4). Masked pixels are set to mid-grey
(127), the tokenizer's zero after its [-1, 1] scaling, so the mask carries no colour. The
box edges are snapped to multiples of the tokenizer's spatial factor (when the frame allows)
so masked and visible areas fall on whole latent tokens.

    inpaint_clip(video)    uint8 [T, H, W, 3] -> same shape, centre box grey
    outpaint_clip(video)   uint8 [T, H, W, 3] -> same shape, border grey
"""
from __future__ import annotations

import numpy as np

MASK_VALUE = 127


def central_box(height: int, width: int, fraction: float = 0.5, align: int = 8
                ) -> tuple[slice, slice]:
    """(rows, cols) of the centred box covering `fraction` of each side, aligned to `align`."""
    if not 0 < fraction < 1:
        raise ValueError(f"mask box fraction must be in (0, 1), got {fraction}")

    def span(size: int) -> slice:
        unit = align if align > 0 and size % align == 0 and size // align >= 2 else 1
        cells = size // unit
        box = min(cells - 1, max(1, int(round(cells * fraction))))
        start = (cells - box) // 2
        return slice(start * unit, (start + box) * unit)

    return span(height), span(width)


def _check(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"masking expects uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    return video


def inpaint_clip(video: np.ndarray, fraction: float = 0.5, align: int = 8) -> np.ndarray:
    video = _check(video)
    rows, cols = central_box(video.shape[1], video.shape[2], fraction, align)
    masked = video.copy()
    masked[:, rows, cols] = MASK_VALUE
    return masked


def outpaint_clip(video: np.ndarray, fraction: float = 0.5, align: int = 8) -> np.ndarray:
    video = _check(video)
    rows, cols = central_box(video.shape[1], video.shape[2], fraction, align)
    masked = np.full_like(video, MASK_VALUE)
    masked[:, rows, cols] = video[:, rows, cols]
    return masked
