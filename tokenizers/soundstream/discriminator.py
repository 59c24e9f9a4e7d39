"""SoundStream's STFT discriminator and the adversarial / feature-matching losses.

Why an STFT discriminator: it sees real and imaginary parts of the spectrum, so it can
penalise phase and fine spectral texture that the spectral L1 losses average away. It is
optional (config.loss.adversarial_weight = 0 disables it and its optimizer).

Input waves [batch, samples] -> STFT [batch, frames, bins, 2] (real, imag) -> 2-D convs
with strides (time 1, freq 2) / (2, 2) -> one logit per time step [batch, frames'].
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .losses import stft


class StftDiscriminator(nn.Module):
    """Returns (logits [batch, t], features: list of intermediate activations)."""
    channels: int = 32
    window_size: int = 1024
    hop: int = 256
    channel_multipliers: Sequence[int] = (1, 2, 4, 4, 8, 8)
    strides: Sequence[tuple[int, int]] = ((1, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2))

    @nn.compact
    def __call__(self, wave):
        spectrum = stft(wave, self.window_size, self.hop)
        x = jnp.stack([spectrum.real, spectrum.imag], axis=-1)
        x = nn.Conv(self.channels, (7, 7), padding="SAME", name="input_conv")(x)
        features = [x]
        for i, (multiplier, stride) in enumerate(zip(self.channel_multipliers, self.strides)):
            y = nn.Conv(self.channels * multiplier, (3, 3), padding="SAME", name=f"block{i}_conv")(
                nn.leaky_relu(x, 0.3))
            y = nn.Conv(self.channels * multiplier, (stride[0] + 2, stride[1] + 2), strides=stride,
                        padding="SAME", name=f"block{i}_down")(nn.leaky_relu(y, 0.3))
            skip = nn.Conv(self.channels * multiplier, (1, 1), strides=stride, name=f"block{i}_skip")(x)
            x = y + skip
            features.append(x)
        # One logit per time step: the output kernel spans all remaining frequency bins.
        logits = nn.Conv(1, (1, x.shape[2]), padding="VALID", name="output_conv")(
            nn.leaky_relu(x, 0.3))
        return logits[:, :, 0, 0], features


def discriminator_hinge_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    return jnp.mean(nn.relu(1.0 - real_logits)) + jnp.mean(nn.relu(1.0 + fake_logits))


def generator_hinge_loss(fake_logits: jax.Array) -> jax.Array:
    return jnp.mean(nn.relu(1.0 - fake_logits))


def feature_matching_loss(real_features, fake_features) -> jax.Array:
    """Mean over layers of L1(real - fake) / mean |real| (real features are constants)."""
    total = 0.0
    for real, fake in zip(real_features, fake_features):
        real = jax.lax.stop_gradient(real)
        total += jnp.mean(jnp.abs(real - fake)) / (jnp.mean(jnp.abs(real)) + 1e-6)
    return total / len(real_features)
