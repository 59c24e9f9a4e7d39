"""MAGVIT-v2 causal 3D CNN encoder and decoder (Flax linen).

Videos are [batch, time, height, width, channels] in [-1, 1]. Every temporal convolution
pads k_t - 1 frames before and none after, so output frame t depends only on input frames
<= t: frame 0 is encoded on its own and an image is a 1-frame video. Temporal strides
keep that property: a stride-2 causal conv maps T = 1 + 2m frames to 1 + m, so the first
latent frame covers exactly the first input frame and the rest are grouped by the factor.

    video [B, 17, 128, 128, 3] --encoder--> z [B, 5, 16, 16, K] --LFQ--> ids [B, 5, 16, 16]
    codes [B, 5, 16, 16, K]   --decoder--> video [B, 17, 128, 128, 3]

The decoder mirrors the encoder with depth-to-space up-sampling (a conv to
C * ft * fs * fs channels, reshaped into time and space; the first ft - 1 frames are
dropped so 1 + m latent frames become 1 + ft*m) and adaptive GroupNorm whose per-position
scale and shift are computed from the quantized latent, resized to each block's grid.

GroupNorm statistics are taken per frame (`FrameGroupNorm`): statistics pooled over time
would let frame t change the outputs of earlier frames and break causality.

`encoder_norm` picks the encoder's normalisation. 'group' (the paper's) pools statistics over
the whole frame, so content anywhere in the frame moves every position's activations. 'position'
takes the statistics of each position's channels alone (a LayerNorm per position), so a
latent depends only on the content inside the encoder's receptive field. (On the embedded
demo, repeatable ids came mostly from the loss weights, see experiments/magvit2_demo.py; the
norm alone left them as they were.) `decoder_norm` makes the same choice for the decoder's
adaptive norms: with 'group' the frame-wide statistics make how one cell's code decodes
depend on every other cell's code, which can pay the encoder to flip a background cell's
bits when the digit moves elsewhere; with 'position' a code decodes the same whatever the
rest of the frame holds beyond the receptive field (on the demo: more codes used, ids a
little steadier through time; README, Tokenizers).
"""
import dataclasses
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vp_tokenizers.magvit2 import lfq


NORMS = ("group", "position")


@dataclasses.dataclass(frozen=True)
class Magvit2Config:
  """Architecture of the tokenizer; `temporal_kernel_size=1` with no temporal down-sampling
  is the image model whose 2D kernels `inflate.py` turns into the video model."""
  num_bits: int = 18
  base_channels: int = 128
  channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
  num_res_blocks: int = 4
  # One entry per transition between consecutive levels (len(channel_multipliers) - 1).
  spatial_downsample: tuple[bool, ...] = (True, True, True)
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  temporal_kernel_size: int = 3
  num_groups: int = 32
  encoder_norm: str = "group"  # 'group' (per-frame GroupNorm) or 'position' (see module docstring)
  decoder_norm: str = "group"  # the same choice for the decoder's adaptive norms
  # Spatial kernel of the encoder's residual blocks at the latent resolution (the last level's
  # blocks and the two mid blocks). 1 keeps each latent cell's view to the ~±10 px that the
  # finer levels give it (at 4x down-sampling), so a moving object changes only the ids near it.
  encoder_latent_kernel_size: int = 3
  in_channels: int = 3
  dtype: str = "float32"  # activation dtype; parameters stay float32

  @classmethod
  def from_dict(cls, d) -> "Magvit2Config":
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"model config: unknown fields {sorted(unknown)}")
    for key in ("channel_multipliers", "spatial_downsample", "temporal_downsample"):
      if key in d:
        d[key] = tuple(d[key])
    config = cls(**d)
    config.validate()
    return config

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def validate(self) -> None:
    lfq._check_bits(self.num_bits)
    levels = len(self.channel_multipliers)
    for key in ("spatial_downsample", "temporal_downsample"):
      if len(getattr(self, key)) != levels - 1:
        raise ValueError(f"model config: {key} needs {levels - 1} entries (one per level "
                         f"transition), got {getattr(self, key)}")
    for mult in self.channel_multipliers:
      if (self.base_channels * mult) % self.num_groups:
        raise ValueError(f"model config: num_groups={self.num_groups} must divide every width, "
                         f"got base_channels*{mult}={self.base_channels * mult}")
    if self.temporal_kernel_size < 1 or self.num_res_blocks < 1:
      raise ValueError("model config: temporal_kernel_size and num_res_blocks must be >= 1")
    if self.temporal_kernel_size == 1 and any(self.temporal_downsample):
      raise ValueError("model config: temporal down-sampling needs temporal_kernel_size > 1")
    if self.encoder_latent_kernel_size not in (1, 3):
      raise ValueError(f"model config: encoder_latent_kernel_size must be 1 or 3, got {self.encoder_latent_kernel_size}")
    for key in ("encoder_norm", "decoder_norm"):
      if getattr(self, key) not in NORMS:
        raise ValueError(f"model config: {key} must be one of {NORMS}, got {getattr(self, key)!r}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"model config: dtype must be float32 or bfloat16, got {self.dtype}")

  @property
  def spatial_factor(self) -> int:
    return 2 ** sum(self.spatial_downsample)

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(self.temporal_downsample)

  def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(t, h, w) of the latent grid; raises ValueError for a geometry the model cannot take."""
    ft, fs = self.temporal_factor, self.spatial_factor
    if num_frames < 1 or (num_frames - 1) % ft:
      raise ValueError(f"video: num_frames must be 1 + {ft}*n (1 for an image), got {num_frames}")
    if height < 1 or width < 1 or height % fs or width % fs:
      raise ValueError(f"video: height and width must be positive multiples of {fs}, "
                       f"got {height}x{width}")
    return (1 + (num_frames - 1) // ft, height // fs, width // fs)


class CausalConv3D(nn.Module):
  """3D convolution padded only on the past in time and symmetrically in space.

  [B, T, H, W, C] -> [B, (T-1)//st + 1, H//ss, W//ss, features] for kernel (kt, k, k), strides
  (st, ss, ss). The kernel is stored as [kt, kh, kw, cin, cout]; the convolution runs as one
  2D convolution over the kt past frames stacked on channels, which XLA executes 2-3x faster
  on CPU than its 3D convolution and identically otherwise.
  """
  features: int
  kernel_size: tuple[int, int, int] = (3, 3, 3)
  strides: tuple[int, int, int] = (1, 1, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kt, kh, kw = self.kernel_size
    st, sh, sw = self.strides
    b, t, _, _, cin = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (kt, kh, kw, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    t_out = (t - 1) // st + 1
    x = jnp.pad(x.astype(self.dtype), ((0, 0), (kt - 1, 0), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([x[:, i:i + st * (t_out - 1) + 1:st] for i in range(kt)], axis=-1)
    stacked = stacked.reshape((b * t_out,) + stacked.shape[2:])
    kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, self.features)
    y = jax.lax.conv_general_dilated(
        stacked, kernel_2d.astype(self.dtype), (sh, sw),
        ((kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + bias.astype(self.dtype)
    return y.reshape((b, t_out) + y.shape[1:])


class FrameGroupNorm(nn.Module):
  """GroupNorm with statistics per frame (over height, width and the channels of a group).

  Statistics pooled over time would let later frames change earlier outputs; per-frame
  statistics keep the network causal. [B, T, H, W, C] -> same shape.
  """
  num_groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, t = x.shape[:2]
    y = nn.GroupNorm(num_groups=self.num_groups, dtype=self.dtype, name="group_norm")(
        x.reshape((b * t,) + x.shape[2:]))
    return y.reshape(x.shape)


def make_norm(kind: str, num_groups: int, dtype: Any, name: str) -> nn.Module:
  """The normalisation layer for `Magvit2Config.encoder_norm` / `decoder_norm`: per-frame GroupNorm,
  or LayerNorm over the channels of each position alone ('position'; a few channels per
  group would leave a position nothing but the signs of their differences)."""
  if kind == "group":
    return FrameGroupNorm(num_groups, dtype, name=name)
  return nn.LayerNorm(epsilon=1e-6, dtype=dtype, name=name)


def causal_upsample_repeat(x: jax.Array, temporal: int, spatial: int) -> jax.Array:
  """Nearest-neighbour causal up-sampling [B, t, h, w, C] -> [B, 1+(t-1)*ft, h*fs, w*fs, C]."""
  x = jnp.repeat(jnp.repeat(x, spatial, axis=2), spatial, axis=3)
  return jnp.repeat(x, temporal, axis=1)[:, temporal - 1:]


def _resize_latent_to(latent: jax.Array, x: jax.Array) -> jax.Array:
  """Repeats the latent grid [B, t, h, w, K] to the grid of the feature map x."""
  ft = 1 if latent.shape[1] == 1 else (x.shape[1] - 1) // (latent.shape[1] - 1)
  return causal_upsample_repeat(latent, ft, x.shape[2] // latent.shape[2])


class AdaptiveGroupNorm(nn.Module):
  """GroupNorm (or, with norm='position', LayerNorm per position) whose scale and shift are
  predicted per position from the quantized latent."""
  num_groups: int
  dtype: Any = jnp.float32
  norm: str = "group"

  @nn.compact
  def __call__(self, x, latent):
    h = make_norm(self.norm, self.num_groups, self.dtype, "norm")(x)
    cond = _resize_latent_to(latent, x).astype(self.dtype)
    scale_shift = nn.Dense(2 * x.shape[-1], dtype=self.dtype, kernel_init=nn.initializers.zeros,
                           name="modulation")(cond)
    scale, shift = jnp.split(scale_shift, 2, axis=-1)
    return h * (1.0 + scale) + shift


class ResBlock(nn.Module):
  """Pre-norm residual block: (norm, SiLU, causal conv) x 2; adaptive norms when `latent` given."""
  features: int
  num_groups: int
  temporal_kernel_size: int
  dtype: Any = jnp.float32
  norm: str = "group"  # Magvit2Config.encoder_norm, or decoder_norm with `latent`
  spatial_kernel_size: int = 3

  @nn.compact
  def __call__(self, x, latent=None):
    def norm(h, name):
      if latent is None:
        return make_norm(self.norm, self.num_groups, self.dtype, name)(h)
      return AdaptiveGroupNorm(self.num_groups, self.dtype, self.norm, name=name)(h, latent)

    kernel = (self.temporal_kernel_size, self.spatial_kernel_size, self.spatial_kernel_size)
    h = CausalConv3D(self.features, kernel, dtype=self.dtype, name="conv1")(nn.silu(norm(x, "norm1")))
    h = CausalConv3D(self.features, kernel, dtype=self.dtype, name="conv2")(nn.silu(norm(h, "norm2")))
    if x.shape[-1] != self.features:
      x = CausalConv3D(self.features, (1, 1, 1), dtype=self.dtype, name="skip")(x)
    return x + h


class Encoder(nn.Module):
  """[B, T, H, W, 3] in [-1, 1] -> continuous latents z [B, t, h, w, K]."""
  config: Magvit2Config

  @nn.compact
  def __call__(self, x):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    kt = c.temporal_kernel_size
    x = CausalConv3D(c.base_channels * c.channel_multipliers[0], (kt, 3, 3), dtype=dtype,
                     name="conv_in")(x.astype(dtype))
    last = len(c.channel_multipliers) - 1
    for level, mult in enumerate(c.channel_multipliers):
      ks = c.encoder_latent_kernel_size if level == last else 3
      for block in range(c.num_res_blocks):
        x = ResBlock(c.base_channels * mult, c.num_groups, kt, dtype, c.encoder_norm, ks,
                     name=f"down{level}_res{block}")(x)
      if level < last:
        st = 2 if c.temporal_downsample[level] else 1
        ss = 2 if c.spatial_downsample[level] else 1
        if st > 1 or ss > 1:
          x = CausalConv3D(x.shape[-1], (kt, 3, 3), (st, ss, ss), dtype=dtype,
                           name=f"down{level}_sample")(x)
    for block in range(2):
      x = ResBlock(x.shape[-1], c.num_groups, kt, dtype, c.encoder_norm, c.encoder_latent_kernel_size,
                   name=f"mid_res{block}")(x)
    x = nn.silu(make_norm(c.encoder_norm, c.num_groups, dtype, "norm_out")(x))
    z = CausalConv3D(c.num_bits, (1, 1, 1), dtype=dtype, name="conv_out")(x)
    return z.astype(jnp.float32)


class DepthToSpaceUpsample(nn.Module):
  """Causal conv to C*ft*fs*fs channels, then depth-to-space: [B,t,h,w,C] -> [B,1+(t-1)ft,h*fs,w*fs,C].

  Channels are laid out (ft, fs, fs, C) so `inflate.py` can tile an image kernel over ft.
  """
  features: int
  temporal: int
  spatial: int
  temporal_kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ft, fs = self.temporal, self.spatial
    x = CausalConv3D(self.features * ft * fs * fs, (self.temporal_kernel_size, 3, 3),
                     dtype=self.dtype, name="conv")(x)
    x = einops.rearrange(x, "b t h w (pt ph pw c) -> b (t pt) (h ph) (w pw) c", pt=ft, ph=fs, pw=fs)
    return x[:, ft - 1:]


class Decoder(nn.Module):
  """Quantized codes [B, t, h, w, K] in {-1, +1} -> video [B, T, H, W, 3] (unbounded, ~[-1, 1])."""
  config: Magvit2Config

  @nn.compact
  def __call__(self, q):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    kt = c.temporal_kernel_size
    q = q.astype(dtype)
    mults = c.channel_multipliers
    x = CausalConv3D(c.base_channels * mults[-1], (kt, 3, 3), dtype=dtype, name="conv_in")(q)
    for block in range(2):
      x = ResBlock(x.shape[-1], c.num_groups, kt, dtype, c.decoder_norm, name=f"mid_res{block}")(x, q)
    for level in reversed(range(len(mults))):
      for block in range(c.num_res_blocks):
        x = ResBlock(c.base_channels * mults[level], c.num_groups, kt, dtype, c.decoder_norm,
                     name=f"up{level}_res{block}")(x, q)
      if level > 0:
        ft = 2 if c.temporal_downsample[level - 1] else 1
        fs = 2 if c.spatial_downsample[level - 1] else 1
        if ft > 1 or fs > 1:
          x = DepthToSpaceUpsample(x.shape[-1], ft, fs, kt, dtype, name=f"up{level}_sample")(x)
    x = nn.silu(AdaptiveGroupNorm(c.num_groups, dtype, c.decoder_norm, name="norm_out")(x, q))
    x = CausalConv3D(c.in_channels, (kt, 3, 3), dtype=dtype, name="conv_out")(x)
    return x.astype(jnp.float32)


class Magvit2(nn.Module):
  """Encoder + LFQ + decoder. `__call__` returns the reconstruction and what the losses need."""
  config: Magvit2Config

  def setup(self):
    self.encoder = Encoder(self.config)
    self.decoder = Decoder(self.config)

  def encode(self, video):
    """[B, T, H, W, 3] in [-1, 1] -> continuous latents [B, t, h, w, K]."""
    return self.encoder(video)

  def decode(self, codes):
    """codes [B, t, h, w, K] in {-1, +1} -> video [B, T, H, W, 3]."""
    return self.decoder(codes)

  def __call__(self, video):
    z = self.encoder(video)
    q, ids = lfq.quantize(z)
    return self.decoder(q), {"z": z, "ids": ids}


def check_video(video: np.ndarray | jax.Array, config: Magvit2Config, name: str = "video") -> None:
  """Raises a clear error unless `video` is [B, T, H, W, C] with a geometry the model accepts."""
  shape = tuple(video.shape)
  if len(shape) != 5:
    raise ValueError(f"{name} must have rank 5 [batch, time, height, width, channels], "
                     f"got shape {shape}")
  if shape[-1] != config.in_channels:
    raise ValueError(f"{name} must have {config.in_channels} channels, got shape {shape}")
  config.latent_shape(*shape[1:4])


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
