"""The demo sound track: a steady tone whose pitch names the digit, a click per wall bounce.

Pitch of digit d: 220 Hz * 2**(2 d / 12) (whole-tone steps from A3: 220 Hz .. 622 Hz), so
a listener (or an FFT) can read the digit from the audio alone. Each click is a 10 ms
burst of decaying white noise starting at the bounce frame's time, easy to find in a
spectrogram because the tone has no energy above 1 kHz.

The tone starts at phase 0 in every clip. Nothing scores the phase, and a random one gave
each digit hundreds of first audio tokens instead of one: video-to-audio then had to learn
which of ~1000 codes belong to the digit it sees, from the one output position that is not
predictable from the audio before it (teacher-forced, the LM put 4.5 nats on that token
whether it saw the clip's own video or another's). With a fixed phase a digit's tone is one
token sequence, so that position is a 10-way choice read from the video.
"""
from __future__ import annotations

import numpy as np

TONE_AMPLITUDE = 0.3
CLICK_AMPLITUDE = 0.5
CLICK_SECONDS = 0.01


def digit_pitch_hz(digit: int) -> float:
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be in 0..9, got {digit}")
    return 220.0 * 2.0 ** (2 * int(digit) / 12)


def demo_audio(digit: int, bounce_frames: list[int], fps: float, num_samples: int,
               sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [num_samples] in [-1, 1]: tone of the digit's pitch plus bounce clicks (noise from `rng`)."""
    t = np.arange(num_samples) / sample_rate
    audio = TONE_AMPLITUDE * np.sin(2 * np.pi * digit_pitch_hz(digit) * t)
    click_len = max(1, int(round(CLICK_SECONDS * sample_rate)))
    envelope = np.exp(-np.arange(click_len) / (click_len / 5))
    for frame in bounce_frames:
        start = int(round(frame / fps * sample_rate))
        n = min(click_len, num_samples - start)
        if n > 0:
            audio[start:start + n] += CLICK_AMPLITUDE * envelope[:n] * rng.uniform(-1, 1, n)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
