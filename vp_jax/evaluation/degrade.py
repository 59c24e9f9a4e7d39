"""Degradations that mimic a tokenizer's losses: blur, a resolution round trip, noise.

Used twice: to augment the digit classifier's training crops (so it reads blurred sprites)
and to measure how robust each scorer is (tests, bench/eval_scorer_robustness.py). A
tokenizer at the demo's size loses fine detail first, which is what all three do.

Shapes: video uint8 [time, height, width, 3] in, same shape and dtype out; audio float
[samples] mono in, float32 [samples] out.

Audio: the demo track is a tone (<= 622 Hz) plus broadband clicks, so the band above 1 kHz
is the clicks. `codec_smoothed_clicks` gives them the damage a low-bit-rate codec
(SoundStream, one latent frame per 640 samples) would do if it kept them at all: only their
energy envelope, spread over a frame, band-limited, quieter, at a wrong overall gain.
`shift_clicks` and `remove_clicks` make wrong tracks that a click scorer must reject.
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


CLICK_BAND_HZ = 1000.0  # the demo's tone has no energy above this; its clicks do


def _bands(audio: np.ndarray, rate: int, split_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """(below, above) `split_hz`: a brick-wall FFT split of float [samples] audio."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be float [samples] mono; got shape {audio.shape}")
    if not 0 < split_hz < rate / 2:
        raise ValueError(f"split frequency {split_hz} Hz must be in (0, {rate / 2}) for rate {rate}")
    spectrum = np.fft.rfft(audio)
    high = spectrum * (np.fft.rfftfreq(audio.size, 1.0 / rate) >= split_hz)
    above = np.fft.irfft(high, audio.size)
    return audio - above, above


def remove_clicks(audio: np.ndarray, rate: int) -> np.ndarray:
    """The track without its band above CLICK_BAND_HZ: the demo's tone, no clicks."""
    return _bands(audio, rate, CLICK_BAND_HZ)[0].astype(np.float32)


def shift_clicks(audio: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """The clicks (band above CLICK_BAND_HZ) moved `seconds` later (circularly): wrong times."""
    low, high = _bands(audio, rate, CLICK_BAND_HZ)
    return (low + np.roll(high, int(round(seconds * rate)))).astype(np.float32)


def codec_smoothed_clicks(audio: np.ndarray, rate: int, rng: np.random.Generator, frame_samples: int = 640,
                          cutoff_hz: float = 4000.0, click_gain: float = 0.5, gain: float = 0.3) -> np.ndarray:
    """The clicks as a codec might return them: the band above CLICK_BAND_HZ keeps only its
    energy envelope, smoothed over `frame_samples` (a Hann window: a codec frame) and filled
    with new random noise, low-passed at `cutoff_hz` and scaled by `click_gain`; then the
    whole track is scaled by `gain` (a codec's level error)."""
    if frame_samples < 1 or cutoff_hz <= CLICK_BAND_HZ:
        raise ValueError(f"frame_samples must be >= 1 and cutoff_hz > {CLICK_BAND_HZ}; got {frame_samples}, "
                         f"{cutoff_hz}")
    low, high = _bands(audio, rate, CLICK_BAND_HZ)
    window = np.hanning(frame_samples + 2)[1:-1]
    envelope = np.sqrt(np.convolve(high ** 2, window / window.sum(), mode="same"))
    clicks, _ = _bands(envelope * rng.standard_normal(high.size), rate, cutoff_hz)
    return (gain * (low + click_gain * clicks)).astype(np.float32)
