"""SoundStream: SEANet-style convolutional encoder/decoder around a residual vector quantizer.

Why this shape: strided 1-D convolutions turn 16 kHz audio into a ~50 Hz latent sequence
(hop = product of strides, e.g. 2*4*5*8 = 320 -> 50 frames/s), the RVQ turns each latent
frame into `levels` discrete ids, and a mirrored transposed-convolution decoder turns the
quantized latents back into a waveform.

Shapes: wave [batch, samples] with samples a multiple of hop; latents
[batch, frames, latent_dim] with frames = samples // hop; ids [batch, frames, levels].

Convolutions are non-causal with 'SAME' padding (we never stream), so `frames * hop`
samples in give exactly `frames` latent frames and the decoder gives back `frames * hop`
samples. The crop policy for arbitrary lengths lives in `api.AudioTokenizer`.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .rvq import ResidualVectorQuantizer


class ResidualUnit(nn.Module):
    """ELU -> dilated conv -> ELU -> 1x1 conv, plus the input. x [batch, time, channels]."""
    channels: int
    dilation: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        y = nn.Conv(self.channels, (self.kernel_size,), kernel_dilation=(self.dilation,),
                    padding="SAME", name="dilated")(nn.elu(x))
        y = nn.Conv(self.channels, (1,), name="pointwise")(nn.elu(y))
        return x + y


def stage_channels(channels: int, num_stages: int, max_channels: int) -> list[int]:
    """Channels after the input conv and after each down-sampling stage (doubling, capped)."""
    return [min(channels * 2**i, max_channels) for i in range(num_stages + 1)]


class SeanetEncoder(nn.Module):
    """wave [batch, samples, 1] -> latents [batch, samples // prod(strides), latent_dim]."""
    channels: int
    strides: Sequence[int]
    latent_dim: int
    max_channels: int = 512
    dilations: Sequence[int] = (1, 3, 9)
    kernel_size: int = 7
    residual_kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        widths = stage_channels(self.channels, len(self.strides), self.max_channels)
        x = nn.Conv(widths[0], (self.kernel_size,), padding="SAME", name="input_conv")(x)
        for i, stride in enumerate(self.strides):
            for dilation in self.dilations:
                x = ResidualUnit(widths[i], dilation, self.residual_kernel_size,
                                 name=f"stage{i}_res{dilation}")(x)
            x = nn.Conv(widths[i + 1], (2 * stride,), strides=(stride,), padding="SAME",
                        name=f"stage{i}_down")(nn.elu(x))
        return nn.Conv(self.latent_dim, (3,), padding="SAME", name="output_conv")(nn.elu(x))


class SeanetDecoder(nn.Module):
    """latents [batch, frames, latent_dim] -> wave [batch, frames * prod(strides), 1]."""
    channels: int
    strides: Sequence[int]
    max_channels: int = 512
    dilations: Sequence[int] = (1, 3, 9)
    kernel_size: int = 7
    residual_kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        widths = stage_channels(self.channels, len(self.strides), self.max_channels)
        x = nn.Conv(widths[-1], (self.kernel_size,), padding="SAME", name="input_conv")(x)
        for i, stride in reversed(list(enumerate(self.strides))):
            x = nn.ConvTranspose(widths[i], (2 * stride,), strides=(stride,), padding="SAME",
                                 name=f"stage{i}_up")(nn.elu(x))
            for dilation in self.dilations:
                x = ResidualUnit(widths[i], dilation, self.residual_kernel_size,
                                 name=f"stage{i}_res{dilation}")(x)
        return nn.Conv(1, (self.kernel_size,), padding="SAME", name="output_conv")(nn.elu(x))


class SoundStream(nn.Module):
    """Encoder -> RVQ -> decoder. Build it from a config with `soundstream_from_config`."""
    channels: int
    strides: Sequence[int]
    latent_dim: int
    levels: int
    codebook_size: int
    max_channels: int = 512
    dilations: Sequence[int] = (1, 3, 9)
    codebook_kind: str = "ema"
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03
    quantizer_dropout_rate: float = 0.0

    def setup(self):
        if any(int(s) < 1 for s in self.strides) or not self.strides:
            raise ValueError(f"SoundStream.strides={tuple(self.strides)}: expected positive ints")
        self.encoder = SeanetEncoder(self.channels, tuple(self.strides), self.latent_dim,
                                     self.max_channels, tuple(self.dilations))
        self.quantizer = ResidualVectorQuantizer(
            self.levels, self.codebook_size, self.latent_dim, self.codebook_kind,
            self.ema_decay, self.dead_code_threshold, self.quantizer_dropout_rate)
        self.decoder = SeanetDecoder(self.channels, tuple(self.strides), self.max_channels,
                                     tuple(self.dilations))

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.strides))

    def _check_wave(self, wave):
        if wave.ndim != 2 or wave.shape[1] % self.hop_length or wave.shape[1] == 0:
            raise ValueError(f"SoundStream: wave must be [batch, samples] with samples a positive "
                             f"multiple of hop {self.hop_length}, got shape {wave.shape}")

    def encode_latents(self, wave):
        """wave [batch, samples] -> continuous latents [batch, frames, latent_dim]."""
        self._check_wave(wave)
        return self.encoder(wave[..., None])

    def encode(self, wave, num_levels: int | None = None):
        """wave [batch, samples] -> ids int32 [batch, frames, levels]."""
        return self.quantizer(self.encode_latents(wave), train=False, num_levels=num_levels)["ids"]

    def decode(self, ids, num_levels=None):
        """ids int32 [batch, frames, n<=levels] -> wave [batch, frames * hop], using the first
        num_levels levels (default: all given; may be a traced scalar)."""
        return self.decoder(self.quantizer.decode_ids(ids, num_levels))[..., 0]

    def set_codebooks(self, codebooks):
        self.quantizer.set_codebooks(codebooks)

    def __call__(self, wave, train: bool = False, num_levels: int | None = None):
        """wave [batch, samples] -> dict(reconstruction [batch, samples], ids, losses...)."""
        out = self.quantizer(self.encode_latents(wave), train=train, num_levels=num_levels)
        out["reconstruction"] = self.decoder(out["quantized"])[..., 0]
        return out


def soundstream_from_config(model_config) -> SoundStream:
    """Builds the model from a config's `model` ConfigDict (see experiments/soundstream_*.py)."""
    c = model_config
    for field in ("channels", "latent_dim", "levels", "codebook_size"):
        if int(c[field]) < 1:
            raise ValueError(f"config.model.{field}={c[field]!r}: expected a positive int")
    if not 0.0 <= float(c.quantizer_dropout_rate) <= 1.0:
        raise ValueError(f"config.model.quantizer_dropout_rate={c.quantizer_dropout_rate!r}: "
                         "expected a value in [0, 1]")
    return SoundStream(
        channels=int(c.channels), strides=tuple(int(s) for s in c.strides),
        latent_dim=int(c.latent_dim), levels=int(c.levels), codebook_size=int(c.codebook_size),
        max_channels=int(c.max_channels), dilations=tuple(int(d) for d in c.dilations),
        codebook_kind=str(c.codebook_kind),
        ema_decay=float(c.ema_decay), dead_code_threshold=float(c.dead_code_threshold),
        quantizer_dropout_rate=float(c.quantizer_dropout_rate))


def init_soundstream(model: SoundStream, rng: jax.Array, samples: int) -> dict:
    """Variables {'params', 'codebook'?} for a [1, samples] input (samples multiple of hop)."""
    params_rng, quantizer_rng = jax.random.split(rng)
    return model.init({"params": params_rng, "quantizer": quantizer_rng},
                      jnp.zeros((1, samples), jnp.float32))
