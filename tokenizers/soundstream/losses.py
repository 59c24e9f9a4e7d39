"""Audio reconstruction losses and quality metrics (jax, differentiable where used as losses).

* `multiscale_spectral_loss`: L1 on STFT magnitudes plus L1 on log magnitudes at several
  window sizes (SoundStream uses windows 2^6..2^11); robust to small phase errors.
* `waveform_l1`: keeps the phase honest, which SI-SNR rewards.
* `si_snr`: scale-invariant signal-to-noise ratio in dB (higher is better), the headline
  metric.
* `log_mel_distance`: mean |log mel(x) - log mel(y)|, a perceptual-ish spectral metric.

All take waves [batch, samples].
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def stft(wave: jax.Array, window_size: int, hop: int | None = None) -> jax.Array:
    """Complex STFT with a periodic Hann window, frames centred by reflect padding.

    wave [batch, samples] -> [batch, frames, window_size // 2 + 1] complex64,
    frames = samples // hop + 1.
    """
    hop = hop or window_size // 4
    if wave.shape[-1] <= window_size // 2:
        raise ValueError(f"stft: {wave.shape[-1]} samples is too short for window {window_size}")
    padded = jnp.pad(wave, ((0, 0), (window_size // 2, window_size // 2)), mode="reflect")
    num_frames = (padded.shape[-1] - window_size) // hop + 1
    index = np.arange(window_size)[None, :] + hop * np.arange(num_frames)[:, None]
    window = jnp.asarray(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_size) / window_size),
                         jnp.float32)
    return jnp.fft.rfft(padded[:, index] * window, axis=-1)


def multiscale_spectral_loss(target: jax.Array, estimate: jax.Array,
                             window_sizes: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
                             log_weight: float = 1.0) -> jax.Array:
    """Mean over scales of L1(|S|) + log_weight * L1(log |S|). Scalar."""
    total = 0.0
    for window_size in window_sizes:
        mag_t = jnp.abs(stft(target, window_size))
        mag_e = jnp.abs(stft(estimate, window_size))
        total += jnp.mean(jnp.abs(mag_t - mag_e))
        total += log_weight * jnp.mean(jnp.abs(jnp.log(mag_t + 1e-5) - jnp.log(mag_e + 1e-5)))
    return total / len(window_sizes)


def waveform_l1(target: jax.Array, estimate: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(target - estimate))


def si_snr(target: jax.Array, estimate: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Scale-invariant SNR in dB per example: [batch, samples] x 2 -> [batch].

    Both are made zero-mean; the target projection of the estimate is the signal, the rest
    is noise: 10 log10(|s_t|^2 / |e|^2) with s_t = <est, t> t / |t|^2, e = est - s_t.
    """
    target = target - jnp.mean(target, axis=-1, keepdims=True)
    estimate = estimate - jnp.mean(estimate, axis=-1, keepdims=True)
    scale = (jnp.sum(estimate * target, axis=-1, keepdims=True)
             / (jnp.sum(target**2, axis=-1, keepdims=True) + eps))
    projection = scale * target
    noise = estimate - projection
    return 10.0 * jnp.log10((jnp.sum(projection**2, axis=-1) + eps)
                            / (jnp.sum(noise**2, axis=-1) + eps))


def mel_filterbank(sample_rate: int, window_size: int, num_mels: int,
                   low_hz: float = 0.0, high_hz: float | None = None) -> np.ndarray:
    """HTK-mel triangular filters: [window_size // 2 + 1, num_mels] float32."""
    high_hz = high_hz or sample_rate / 2
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    edges = to_hz(np.linspace(to_mel(low_hz), to_mel(high_hz), num_mels + 2))
    bins = np.linspace(0, sample_rate / 2, window_size // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(wave: jax.Array, sample_rate: int, window_size: int = 1024,
                        num_mels: int = 64) -> jax.Array:
    """[batch, samples] -> natural-log mel power [batch, frames, num_mels]."""
    power = jnp.abs(stft(wave, window_size)) ** 2
    return jnp.log(power @ mel_filterbank(sample_rate, window_size, num_mels) + 1e-5)


def log_mel_distance(target: jax.Array, estimate: jax.Array, sample_rate: int,
                     window_size: int = 1024, num_mels: int = 64) -> jax.Array:
    """Mean |log mel(target) - log mel(estimate)| per example: -> [batch]."""
    diff = (log_mel_spectrogram(target, sample_rate, window_size, num_mels)
            - log_mel_spectrogram(estimate, sample_rate, window_size, num_mels))
    return jnp.mean(jnp.abs(diff), axis=(1, 2))
