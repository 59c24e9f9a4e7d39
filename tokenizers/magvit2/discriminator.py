"""StyleGAN-style 3D discriminator for the tokenizer's adversarial loss.

As in StyleGAN2 and MAGVIT: a stack of residual blocks, each two 3x3x3 convs with leaky
ReLU and a 2x average-pool down-sampling of the main and skip paths, summed and scaled by
1/sqrt(2). The discriminator needs no causality. Time is pooled only while it has more
than one frame, so the same weights score images (T = 1) and videos. The head averages
over the remaining grid (instead of StyleGAN's fixed 4x4 flatten) so one discriminator
takes every resolution and aspect ratio.

    video [B, T, H, W, 3] in [-1, 1] -> logits [B]
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _downsample(x: jax.Array) -> jax.Array:
  """2x average pool in height and width, and in time when T > 1 (odd T pads the last frame)."""
  if x.shape[1] > 1:
    if x.shape[1] % 2:
      x = jnp.concatenate([x, x[:, -1:]], axis=1)
    window = (2, 2, 2)
  else:
    window = (1, 2, 2)
  return nn.avg_pool(x, window, strides=window, padding="VALID")


class DiscriminatorBlock(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(nn.Conv(x.shape[-1], (3, 3, 3), padding="SAME", dtype=self.dtype,
                              name="conv1")(x), 0.2)
    h = nn.leaky_relu(nn.Conv(self.features, (3, 3, 3), padding="SAME", dtype=self.dtype,
                              name="conv2")(h), 0.2)
    skip = nn.Conv(self.features, (1, 1, 1), use_bias=False, dtype=self.dtype, name="skip")(x)
    return (_downsample(h) + _downsample(skip)) / jnp.sqrt(2.0)


class Discriminator(nn.Module):
  """[B, T, H, W, C] -> [B] real/fake logits. `channel_multipliers` sets one block per entry."""
  base_channels: int = 64
  channel_multipliers: tuple[int, ...] = (2, 4, 4, 4)
  dtype: str = "float32"

  @nn.compact
  def __call__(self, video):
    dtype = jnp.dtype(self.dtype)
    x = nn.leaky_relu(nn.Conv(self.base_channels, (3, 3, 3), padding="SAME", dtype=dtype,
                              name="conv_in")(video.astype(dtype)), 0.2)
    for i, mult in enumerate(self.channel_multipliers):
      if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"discriminator: {len(self.channel_multipliers)} down-sampling blocks need "
                         f"a larger input than {video.shape[1:4]}")
      x = DiscriminatorBlock(self.base_channels * mult, dtype, name=f"block{i}")(x)
    x = nn.leaky_relu(nn.Conv(x.shape[-1], (3, 3, 3), padding="SAME", dtype=dtype,
                              name="conv_out")(x), 0.2)
    x = jnp.mean(x, axis=(1, 2, 3))
    x = nn.leaky_relu(nn.Dense(x.shape[-1], dtype=dtype, name="dense")(x), 0.2)
    return nn.Dense(1, dtype=dtype, name="logits")(x)[:, 0].astype(jnp.float32)
