"""Perceptual loss from a frozen, pre-trained image network (MAGVIT-v2 uses ResNet-50).

Nothing is downloaded. Networks (`loss.perceptual.network`):
- 'resnet': the user provides the weights file (`loss.perceptual.weights_path`), the Hugging
  Face `ResNetModel` / `ResNetForImageClassification` layout in a `.safetensors` file (e.g.
  `microsoft/resnet-50`'s `model.safetensors`); depths, widths and block type (basic or
  bottleneck) are read from the tensors themselves.
- 'demo_digits': a digit classifier trained here on real frames of the embedded demo's train
  split (`demo_perceptual.py`), cached at weights_path ('' = <tokenizer workdir>/demo_digits.msgpack).
The network is pluggable: register a loader `(perceptual_config, workdir) -> features` in
`NETWORKS`, where features(images) returns a list of [N, h, w, C] arrays.

Loss: frames of both videos go through the network (ImageNet normalisation) and, at each
stage output, the squared distance of channel-unit-normalised features is averaged over
positions and summed over stages (LPIPS without its learned channel weights).
`loss.perceptual.frames_per_clip` > 0 scores that many frames of each clip, drawn afresh each
step, instead of all of them: the network's cost grows with the frames it sees, and on video
clips it would otherwise run on every frame of every step (0 = every frame).

    recon, video [B, T, H, W, 3] in [-1, 1], key -> scalar
"""
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
BATCH_NORM_EPS = 1e-5


def _conv(x, kernel, stride):
  """NHWC conv with a torch OIHW kernel and torch's padding k // 2."""
  pad = kernel.shape[-1] // 2
  return jax.lax.conv_general_dilated(x, jnp.transpose(kernel, (2, 3, 1, 0)), (stride, stride),
                                      [(pad, pad), (pad, pad)],
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _batch_norm(x, bn):
  scale = bn["weight"] / jnp.sqrt(bn["running_var"] + BATCH_NORM_EPS)
  return x * scale + (bn["bias"] - bn["running_mean"] * scale)


def _conv_layer(x, weights, prefix, stride, relu):
  x = _batch_norm(_conv(x, weights[f"{prefix}.convolution.weight"], stride),
                  {k: weights[f"{prefix}.normalization.{k}"]
                   for k in ("weight", "bias", "running_mean", "running_var")})
  return jax.nn.relu(x) if relu else x


def _count(weights, pattern: str) -> int:
  found = {int(m.group(1)) for k in weights for m in [re.match(pattern, k)] if m}
  return max(found) + 1 if found else 0


def resnet_features(weights: dict[str, jax.Array], images: jax.Array) -> list[jax.Array]:
  """Stage outputs of a Hugging Face-layout ResNet. images [N, H, W, 3] already normalised."""
  x = _conv_layer(images, weights, "embedder.embedder", 2, relu=True)
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                            [(0, 0), (1, 1), (1, 1), (0, 0)])
  features = []
  for s in range(_count(weights, r"encoder\.stages\.(\d+)\.")):
    for l in range(_count(weights, rf"encoder\.stages\.{s}\.layers\.(\d+)\.")):
      prefix = f"encoder.stages.{s}.layers.{l}"
      stride = 2 if (s > 0 and l == 0) else 1
      residual = x
      if f"{prefix}.shortcut.convolution.weight" in weights:
        residual = _conv_layer(x, weights, f"{prefix}.shortcut", stride, relu=False)
      num_convs = _count(weights, rf"{re.escape(prefix)}\.layer\.(\d+)\.")
      h = x
      for i in range(num_convs):
        # Bottleneck: 1x1, 3x3 (strided), 1x1. Basic: 3x3 (strided), 3x3.
        conv_stride = stride if i == (1 if num_convs == 3 else 0) else 1
        h = _conv_layer(h, weights, f"{prefix}.layer.{i}", conv_stride, relu=i < num_convs - 1)
      x = jax.nn.relu(h + residual)
    features.append(x)
  return features


def load_resnet_weights(path: str) -> dict[str, jax.Array]:
  """Reads a Hugging Face ResNet safetensors file; drops the 'resnet.' prefix and the classifier."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"loss.perceptual.weights_path: file not found: {path!r} (nothing is "
                            "downloaded; provide e.g. microsoft/resnet-50 model.safetensors)")
  try:
    tensors = load_file(path)
  except Exception as e:  # safetensors raises its own error types for corrupt files
    raise ValueError(f"loss.perceptual.weights_path: cannot read {path} as safetensors: {e}") from e
  weights = {k.removeprefix("resnet."): jnp.asarray(v, jnp.float32) for k, v in tensors.items()
             if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")}
  if "embedder.embedder.convolution.weight" not in weights:
    raise ValueError(f"loss.perceptual.weights_path: {path} is not a Hugging Face ResNet "
                     f"(no embedder.embedder.convolution.weight; keys start {sorted(weights)[:3]})")
  return weights


def imagenet_normalise(images):
  """Images in [0, 1] -> the input every network here takes (ImageNet mean / std)."""
  return (images - IMAGENET_MEAN) / IMAGENET_STD


def _load_resnet(perceptual_config, workdir: str) -> Callable[[jax.Array], list[jax.Array]]:
  del workdir  # the user's file
  weights = load_resnet_weights(perceptual_config.weights_path)
  return lambda images: resnet_features(weights, images)


def _load_demo_digits(perceptual_config, workdir: str) -> Callable[[jax.Array], list[jax.Array]]:
  from vp_tokenizers.magvit2 import demo_perceptual  # pylint: disable=g-import-not-at-top (imports this module)
  defaults = demo_perceptual.DigitNetSettings()
  settings = demo_perceptual.DigitNetSettings(num_clips=perceptual_config.get("train_clips", defaults.num_clips),
                                              steps=perceptual_config.get("train_steps", defaults.steps))
  path = perceptual_config.weights_path or os.path.join(workdir, demo_perceptual.DEFAULT_FILE)
  return demo_perceptual.DigitPerceptualNetwork.load_or_train(path, settings).features


NETWORKS: dict[str, Callable] = {"resnet": _load_resnet, "demo_digits": _load_demo_digits}


def _unit_normalise(x):
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-10)


def pick_frames(recon: jax.Array, video: jax.Array, frames_per_clip: int, key: jax.Array):
  """The same frames_per_clip random frames of each clip from both [B, T, ...] videos (all if T <= it)."""
  batch, num_frames = recon.shape[:2]
  if frames_per_clip <= 0 or frames_per_clip >= num_frames:
    return recon, video
  order = jnp.argsort(jax.random.uniform(key, (batch, num_frames)), axis=1)[:, :frames_per_clip]
  take = lambda x: jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
  return take(recon), take(video)


def make_perceptual_loss(perceptual_config, workdir: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
  """(recon, video [B, T, H, W, 3] in [-1, 1], key) -> scalar; the network comes from the config.

  workdir: the tokenizer's run directory, where networks trained here are cached.
  key: draws the frames scored when `frames_per_clip` is set.
  """
  if perceptual_config.network not in NETWORKS:
    raise ValueError(f"loss.perceptual.network={perceptual_config.network!r}: expected one of "
                     f"{sorted(NETWORKS)}")
  frames_per_clip = perceptual_config.get("frames_per_clip", 0)
  if not isinstance(frames_per_clip, int) or frames_per_clip < 0:
    raise ValueError(f"loss.perceptual.frames_per_clip={frames_per_clip!r}: expected an int >= 0 "
                     "(0 = every frame)")
  features_fn = NETWORKS[perceptual_config.network](perceptual_config, workdir)

  def loss(recon, video, key):
    recon, video = pick_frames(recon, video, frames_per_clip, key)
    frames = jnp.concatenate([recon, video]).reshape((-1,) + recon.shape[2:])
    frames = imagenet_normalise((frames + 1.0) / 2.0)
    total = 0.0
    for f in features_fn(frames):
      a, b = jnp.split(_unit_normalise(f), 2)
      total += jnp.mean(jnp.sum(jnp.square(a - jax.lax.stop_gradient(b)), axis=-1))
    return total

  return loss
