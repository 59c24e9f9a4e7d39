"""Does a generated clip keep what it was given? First-frame and masked-region fidelity.

Image-to-video is given the first frame: its generated clip should start with it
(`first_frame_scores`, PSNR and mean absolute error against the real first frame).
Inpainting is given everything but the central box and must fill the box; outpainting is
given only the box and must fill the border (`data_pipelines.masks.central_box` owns the
box, so this module never re-derives it). `masked_region_scores` reports the error inside
the region the model had to fill (how plausible the fill is next to the real content) and
in the region it was given (how well it kept it).

The reference is the real clip (for a ceiling, the real clip tokenized and decoded is
scored the same way). PSNR uses peak 255 and is capped at `PSNR_CAP_DB` so identical
pixels give a finite, averageable number.

Shapes: video, reference uint8 [time, height, width, 3].
"""
from __future__ import annotations

import numpy as np

from data_pipelines.masks import central_box
from vp_jax.evaluation.sprite import check_video

PSNR_CAP_DB = 60.0
MASKED_TASKS = ("inpainting", "outpainting")


def _check_pair(video: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    video, reference = check_video(video, "video"), check_video(reference, "reference")
    if video.shape != reference.shape:
        raise ValueError(f"video {video.shape} and reference {reference.shape} must have one shape")
    return video.astype(np.float64), reference.astype(np.float64)


def _psnr_from_mse(mse: float) -> float:
    return float(min(PSNR_CAP_DB, 10.0 * np.log10(255.0 ** 2 / mse))) if mse > 0 else PSNR_CAP_DB


def region_errors(video: np.ndarray, reference: np.ndarray, region: np.ndarray | None = None
                  ) -> tuple[float, float]:
    """(PSNR dB, mean absolute error in grey levels) over the pixels where `region` is True.

    region: bool [H, W] (every frame) or [T, H, W], or None for the whole clip.
    """
    video, reference = _check_pair(video, reference)
    diff = video - reference
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape not in (video.shape[1:3], video.shape[:3]):
            raise ValueError(f"region must be bool [H, W] or [T, H, W] matching {video.shape[:3]}; "
                             f"got {region.shape}")
        if not region.any():
            raise ValueError("region selects no pixels")
        diff = diff[np.broadcast_to(region, video.shape[:3])]
    return _psnr_from_mse(float(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def first_frame_scores(video: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """{'first_frame_psnr', 'first_frame_mae'}: generated frame 0 against the real frame 0."""
    video, reference = check_video(video, "video"), check_video(reference, "reference")
    psnr, mae = region_errors(video[:1], reference[:1])
    return {"first_frame_psnr": psnr, "first_frame_mae": mae}


def filled_region(task: str, height: int, width: int, fraction: float = 0.5, align: int = 8) -> np.ndarray:
    """bool [H, W]: the pixels the model had to generate for inpainting or outpainting."""
    if task not in MASKED_TASKS:
        raise ValueError(f"filled_region is defined for {MASKED_TASKS}, got task {task!r}")
    rows, cols = central_box(height, width, fraction, align)
    box = np.zeros([height, width], bool)
    box[rows, cols] = True
    return box if task == "inpainting" else ~box


def masked_region_scores(video: np.ndarray, reference: np.ndarray, task: str, fraction: float = 0.5,
                         align: int = 8) -> dict[str, float]:
    """{'masked_psnr', 'masked_mae'} in the filled region, {'visible_psnr', 'visible_mae'} outside it."""
    video, reference = check_video(video, "video"), check_video(reference, "reference")
    filled = filled_region(task, video.shape[1], video.shape[2], fraction, align)
    masked_psnr, masked_mae = region_errors(video, reference, filled)
    visible_psnr, visible_mae = region_errors(video, reference, ~filled)
    return {"masked_psnr": masked_psnr, "masked_mae": masked_mae,
            "visible_psnr": visible_psnr, "visible_mae": visible_mae}
