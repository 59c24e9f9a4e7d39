"""Scores one clip of one task against the demo's ground truth: the harness's per-clip entry.

Which scores a task gets follows from what its prefix gave the model and what the truth
can check (`TASK_SCORES`):

    t2v, stylization       digit + motion (the caption names both)
    t2i                    digit (one frame has no motion)
    i2v                    first frame + digit (the first frame fixes both)
    continuation           digit + motion, incl. the tracked path against the true one, on
                           the generated frames only (after the given head)
    inpainting/outpainting masked-region error + digit + motion
    audio_to_video         digit (the tone names it; clicks alone cannot name a direction)
    video_to_audio         pitch class + click timing
    av_continuation        motion + pitch + clicks
    unconditional          sprite found / motion consistency only (no truth to compare)
    reconstruction         tokenizer PSNR (and SI-SNR with audio) against the original

`given_frames`: frames of the clip the task's prefix gave the model (continuation's head, the
first frame of i2v). Digit and motion scores read only the frames after them, so a score
says what the model made, not what it was shown.

The main job calls `score_clip` in-process on decoded arrays; `evaluate_clips` calls it on
files. Shapes: video uint8 [T, H, W, 3]; audio float32 [samples] mono.
"""
from __future__ import annotations

import math

import numpy as np

from vp_jax.evaluation import audio_scores, faithfulness, motion
from vp_jax.evaluation.digit_classifier import DigitClassifier, score_digit

TASK_SCORES: dict[str, tuple[str, ...]] = {
    "unconditional": ("consistency",),
    "t2v": ("digit", "motion"),
    "t2i": ("digit",),
    "i2v": ("first_frame", "digit"),
    "continuation": ("digit", "motion"),
    "inpainting": ("masked", "digit", "motion"),
    "outpainting": ("masked", "digit", "motion"),
    "stylization": ("digit", "motion"),
    "audio_to_video": ("digit",),
    "video_to_audio": ("audio",),
    "av_continuation": ("motion", "audio"),
    "reconstruction": ("reconstruction",),
}


def si_snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SI-SNR (dB) of an audio estimate, both float [samples]; the shorter length is used."""
    from vp_tokenizers.soundstream.losses import si_snr

    n = min(len(reference), len(estimate))
    if n < 2:
        raise ValueError(f"SI-SNR needs >= 2 samples in both signals; got {len(reference)} and {len(estimate)}")
    return float(si_snr(np.asarray(reference[None, :n], np.float32), np.asarray(estimate[None, :n], np.float32))[0])


def score_clip(task: str, video: np.ndarray | None, truth: dict, *,
               classifier: DigitClassifier | None = None, audio: np.ndarray | None = None,
               reference_video: np.ndarray | None = None, reference_audio: np.ndarray | None = None,
               fps: float = 8.0, sample_rate: int = 16000, mask_fraction: float = 0.5,
               mask_align: int = 8, given_frames: int = 0) -> dict[str, float]:
    """All scores `TASK_SCORES[task]` names, as {metric: value}; NaN where undefined.

    Raises ValueError naming the missing input (a classifier for digit scores, audio for
    audio scores, a reference for first-frame, masked and reconstruction scores).
    """
    if task not in TASK_SCORES:
        raise ValueError(f"no scores defined for task {task!r}; known: {sorted(TASK_SCORES)}")
    if video is not None and not 0 <= given_frames < len(video):
        raise ValueError(f"task {task}: given_frames={given_frames} must be in [0, {len(video)}) for a "
                         f"{len(video)}-frame clip")
    made = video[given_frames:] if video is not None else None
    made_truth = motion.truth_from_frame(truth, given_frames) if "motion" in TASK_SCORES[task] else truth
    scores: dict[str, float] = {}
    for kind in TASK_SCORES[task]:
        if kind != "audio" and video is None:
            raise ValueError(f"task {task}: {kind} scores need the clip's video")
        if kind == "digit":
            if classifier is None:
                raise ValueError(f"task {task}: digit scores need a DigitClassifier")
            scores |= score_digit(made, truth, classifier)
        elif kind == "motion" and len(made) >= 3:
            scores |= motion.score_motion(made, made_truth)
        elif kind == "consistency":
            estimate = motion.estimate_motion(video)
            scores |= {"sprite_found_fraction": estimate.found_fraction,
                       "motion_fit_error_px": estimate.fit_error_px}
        elif kind == "first_frame":
            scores |= faithfulness.first_frame_scores(video, _needed(reference_video, task, "reference video"))
        elif kind == "masked":
            scores |= faithfulness.masked_region_scores(
                video, _needed(reference_video, task, "reference video"), task, mask_fraction, mask_align)
        elif kind == "audio":
            scores |= audio_scores.score_audio(_needed(audio, task, "audio"), sample_rate, truth, fps)
        elif kind == "reconstruction":
            psnr, _ = faithfulness.region_errors(video, _needed(reference_video, task, "reference video"))
            scores["psnr"] = psnr
            if audio is not None and reference_audio is not None:
                scores["si_snr_db"] = si_snr_db(reference_audio, audio)
    return {k: float(v) if v is not None else math.nan for k, v in scores.items()}


def _needed(value, task: str, what: str):
    if value is None:
        raise ValueError(f"task {task}: scoring needs the {what}")
    return value
