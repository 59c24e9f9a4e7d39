"""Scores a demo sound track against its ground truth: which digit's pitch, clicks on time.

The demo's audio is a steady tone whose pitch names the digit (220 Hz * 2**(2 d / 12),
`data_pipelines.demo.sound.digit_pitch_hz`) plus a 10 ms noise click at every wall bounce.
The tone has no energy above 1 kHz and the clicks are broadband, so the two are read apart:

  pitch   the strongest spectral peak between the lowest and highest digit pitch (Hann
          window, zero-padded FFT, parabolic interpolation), then the nearest digit pitch
          on a log-frequency scale. Whole-tone steps are 12% apart, so a tokenizer that
          detunes by less than a semitone still gives the right class.
  clicks  energy of the signal above `CLICK_HIGHPASS_HZ` in 5 ms hops; onsets are where
          that energy first rises above a threshold set from the track's own noise floor
          (median + 8 median absolute deviations, so noise at 10 dB SNR stays below it)
          and a floor relative to the track's own level (`MIN_CLICK_RELATIVE_RMS` of its
          RMS), so a click-free clean track detects nothing. Every part of the threshold
          scales with the track: a tokenizer that reconstructs at the wrong gain (an
          undertrained SoundStream returns the demo track about 14x too quiet) keeps its
          clicks, and a click-free or mistimed track still scores 0 at any gain. Detected
          onsets are matched one-to-one to bounce times (bounce frame / fps) within a
          tolerance.

All inputs are float [samples] mono; times are seconds.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.demo.sound import digit_pitch_hz

DIGIT_PITCHES_HZ = np.array([digit_pitch_hz(d) for d in range(10)])
CLICK_HIGHPASS_HZ = 1500.0
HOP_SECONDS = 0.005
WINDOW_SECONDS = 0.010
# Clicks closer than this merge into one (the demo's clicks are >= 1 frame = 125 ms apart).
MIN_CLICK_SEPARATION_SECONDS = 0.06
# Floor of the high-passed 10 ms RMS that counts as a click, relative to the RMS of the
# whole track (-26 dB). A demo click's high-passed RMS over its window is about 0.09 on a
# track of RMS 0.21 (ratio ~0.4); a pure tone's high band stays orders of magnitude lower.
MIN_CLICK_RELATIVE_RMS = 0.05
# Absolute floor (-80 dBFS): below it a track is silence and has no clicks.
SILENCE_RMS = 1e-4
EDGE_FADE_SECONDS = 0.02


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1 or audio.size < 64:
        raise ValueError(f"audio must be float [samples] mono with >= 64 samples; got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or Inf samples")
    if sample_rate <= 2 * DIGIT_PITCHES_HZ[-1]:
        raise ValueError(f"sample_rate {sample_rate} Hz cannot carry the demo pitches "
                         f"(need > {2 * DIGIT_PITCHES_HZ[-1]:.0f} Hz)")
    return audio


def estimate_pitch_hz(audio: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest peak in the digit-pitch band, sub-bin accurate."""
    audio = _check_audio(audio, sample_rate)
    n_fft = 1 << int(np.ceil(np.log2(audio.size * 4)))
    spectrum = np.abs(np.fft.rfft((audio - audio.mean()) * np.hanning(audio.size), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = np.flatnonzero((freqs >= DIGIT_PITCHES_HZ[0] * 0.85) & (freqs <= DIGIT_PITCHES_HZ[-1] * 1.15))
    k = band[np.argmax(spectrum[band])]
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
    denom = a - 2 * b + c
    offset = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float((k + offset) * sample_rate / n_fft)


def pitch_class(pitch_hz: float) -> int:
    """The digit whose demo pitch is nearest to `pitch_hz` on a log-frequency scale."""
    if not pitch_hz > 0:
        raise ValueError(f"pitch_hz must be positive, got {pitch_hz}")
    return int(np.argmin(np.abs(np.log2(DIGIT_PITCHES_HZ / pitch_hz))))


def detect_clicks(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset times (seconds, float64 [num_clicks]) of broadband clicks above the tone."""
    audio = _check_audio(audio, sample_rate)
    # A raised-cosine fade at both ends: the tone starts and stops abruptly, and that step
    # (or the FFT's wrap-around) would otherwise read as a click at the clip's edges.
    fade = min(audio.size // 4, int(round(EDGE_FADE_SECONDS * sample_rate)))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    audio = audio.copy()
    audio[:fade] *= ramp
    audio[audio.size - fade:] *= ramp[::-1]
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(audio.size, 1.0 / sample_rate) < CLICK_HIGHPASS_HZ] = 0
    high = np.fft.irfft(spectrum, audio.size)
    hop = max(1, int(round(HOP_SECONDS * sample_rate)))
    window = max(hop, int(round(WINDOW_SECONDS * sample_rate)))
    starts = np.arange(0, max(1, audio.size - window + 1), hop)
    cumsum = np.concatenate([[0.0], np.cumsum(high ** 2)])
    rms = np.sqrt((cumsum[np.minimum(starts + window, audio.size)] - cumsum[starts]) / window)
    floor = np.median(rms)
    level = np.sqrt(np.mean(audio ** 2))
    threshold = max(SILENCE_RMS, MIN_CLICK_RELATIVE_RMS * level, floor + 8 * np.median(np.abs(rms - floor)),
                    1.4 * floor)
    above = np.flatnonzero(rms > threshold)
    onsets, last = [], -np.inf
    for i in above:
        # The window starting at i first covers the click when its end passes the onset;
        # stepping back to the window's end minus one hop places the onset within a hop.
        t = (starts[i] + window - hop) / sample_rate
        if t - last > MIN_CLICK_SEPARATION_SECONDS:
            onsets.append(t)
        last = t
    return np.array(onsets, np.float64)


@dataclasses.dataclass(frozen=True)
class ClickScore:
    """One-to-one matching of detected clicks to bounce times."""

    num_true: int
    num_detected: int
    num_matched: int
    mean_abs_error_seconds: float  # over matched clicks; NaN if none matched

    @property
    def precision(self) -> float:
        return self.num_matched / self.num_detected if self.num_detected else float(self.num_true == 0)

    @property
    def recall(self) -> float:
        return self.num_matched / self.num_true if self.num_true else float(self.num_detected == 0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_clicks(detected_seconds: np.ndarray, true_seconds: np.ndarray,
                 tolerance_seconds: float) -> ClickScore:
    """Greedy one-to-one matching, closest pairs first, of detected to true click times."""
    detected = np.sort(np.asarray(detected_seconds, np.float64).reshape(-1))
    true = np.sort(np.asarray(true_seconds, np.float64).reshape(-1))
    if tolerance_seconds <= 0:
        raise ValueError(f"tolerance_seconds must be positive, got {tolerance_seconds}")
    pairs = sorted((abs(d - t), i, j) for i, d in enumerate(detected) for j, t in enumerate(true)
                   if abs(d - t) <= tolerance_seconds)
    used_d, used_t, errors = set(), set(), []
    for err, i, j in pairs:
        if i not in used_d and j not in used_t:
            used_d.add(i); used_t.add(j); errors.append(err)
    return ClickScore(len(true), len(detected), len(errors),
                      float(np.mean(errors)) if errors else float("nan"))


def score_audio(audio: np.ndarray, sample_rate: int, truth: dict, fps: float,
                tolerance_frames: float = 0.5) -> dict[str, float]:
    """All audio scores of one clip against its demo `truth` dict.

    Returns {'pitch_class_correct': 0/1, 'pitch_hz': ..., 'pitch_cents_error': ...,
    'click_precision', 'click_recall', 'click_f1', 'click_timing_error_ms'}.
    """
    for key in ("digit", "bounce_frames"):
        if key not in truth:
            raise ValueError(f"truth is missing {key!r}; got keys {sorted(truth)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if "positions" in truth:
        # Codecs pad the end (AAC to whole 1024-sample frames); the tone's stop there would
        # read as a click, so score the clip's own duration only.
        audio = np.asarray(audio)[:int(round(len(truth["positions"]) / fps * sample_rate))]
    pitch = estimate_pitch_hz(audio, sample_rate)
    true_pitch = float(truth.get("pitch_hz", digit_pitch_hz(truth["digit"])))
    clicks = match_clicks(detect_clicks(audio, sample_rate),
                          np.asarray(truth["bounce_frames"], np.float64) / fps,
                          tolerance_frames / fps)
    return {
        "pitch_class_correct": float(pitch_class(pitch) == int(truth["digit"])),
        "pitch_hz": pitch,
        "pitch_cents_error": float(abs(1200 * np.log2(pitch / true_pitch))),
        "click_precision": clicks.precision,
        "click_recall": clicks.recall,
        "click_f1": clicks.f1,
        "click_timing_error_ms": 1000 * clicks.mean_abs_error_seconds,
    }
