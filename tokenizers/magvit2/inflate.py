"""2D -> causal 3D inflation: start the video tokenizer from the image tokenizer.

MAGVIT-v2 trains on images first, then inflates every 2D kernel to a causal 3D kernel by
placing it in the last temporal slot (the current frame) and zeros in the earlier slots.
The inflated video model then maps every frame exactly as the image model did, and video
training only has to learn how to use the past.

The image model is the same architecture with `temporal_kernel_size=1` and no temporal
down-sampling. Kernels [1, kh, kw, cin, cout] become [kt, kh, kw, cin, cout]. A
depth-to-space layer that also up-samples time has ft times more output channels, laid out
(ft, fs, fs, C): the image kernel and bias are tiled over ft, so each new frame starts as a
copy of the image decoder's output. A conv with no image counterpart (one that only
down-samples time, or a depth-to-space layer that only up-samples it) starts as the identity
on the current frame, tiled over the new frames, so the inflated model still maps the last
frame of each group as the image model did instead of through random weights. Such
parameters are returned by name.
"""
import jax
import jax.numpy as jnp

from vp_tokenizers.magvit2.model import Magvit2Config


def image_config_for(video_config: Magvit2Config) -> Magvit2Config:
  """The image-model config whose parameters `inflate_params` maps onto `video_config`."""
  d = video_config.to_dict()
  d.update(temporal_kernel_size=1, temporal_downsample=tuple(False for _ in video_config.temporal_downsample))
  return Magvit2Config.from_dict(d)


def _inflate_leaf(path: str, image_leaf, video_leaf):
  if image_leaf.shape == video_leaf.shape:
    return jnp.asarray(image_leaf, video_leaf.dtype)
  if image_leaf.ndim == 5 and image_leaf.shape[0] == 1:  # conv kernel [1, kh, kw, cin, cout]
    kernel = image_leaf[0]
    reps = video_leaf.shape[-1] // kernel.shape[-1]
    if kernel.shape[:3] != video_leaf.shape[1:4] or reps * kernel.shape[-1] != video_leaf.shape[-1]:
      raise ValueError(f"inflate: cannot map {path} {image_leaf.shape} onto {video_leaf.shape}")
    return jnp.zeros(video_leaf.shape, video_leaf.dtype).at[-1].set(jnp.tile(kernel, (1, 1, 1, reps)))
  if image_leaf.ndim == 1 and video_leaf.shape[0] % image_leaf.shape[0] == 0:  # tiled conv bias
    return jnp.tile(image_leaf, video_leaf.shape[0] // image_leaf.shape[0]).astype(video_leaf.dtype)
  raise ValueError(f"inflate: cannot map {path} {image_leaf.shape} onto {video_leaf.shape}")


def _identity_leaf(path: str, video_leaf):
  """The no-counterpart leaf as an identity on the current frame: kernel [kt, kh, kw, c, reps*c]
  passes each channel through at the last temporal slot and the spatial centre; bias 0."""
  if video_leaf.ndim == 1:
    return jnp.zeros(video_leaf.shape, video_leaf.dtype)
  if video_leaf.ndim == 5 and video_leaf.shape[-1] % video_leaf.shape[-2] == 0:
    _, kh, kw, cin, cout = video_leaf.shape
    eye = jnp.tile(jnp.eye(cin, dtype=video_leaf.dtype), (1, cout // cin))
    return jnp.zeros(video_leaf.shape, video_leaf.dtype).at[-1, kh // 2, kw // 2].set(eye)
  raise ValueError(f"inflate: {path} {video_leaf.shape} has no image counterpart and is not a "
                   "conv whose output channels are a multiple of its input channels")


def inflate_params(image_params, video_params):
  """Returns (video-shaped params initialised from `image_params`, names of those without an
  image counterpart, which start as identities).

  Both are flax param trees (nested dicts); `video_params` supplies the shapes.
  """
  image_flat = {jax.tree_util.keystr(p): leaf
                for p, leaf in jax.tree_util.tree_leaves_with_path(image_params)}
  unmatched = []

  def visit(path, video_leaf):
    name = jax.tree_util.keystr(path)
    if name not in image_flat:
      unmatched.append(name)
      return _identity_leaf(name, video_leaf)
    return _inflate_leaf(name, image_flat[name], video_leaf)

  return jax.tree_util.tree_map_with_path(visit, video_params), unmatched
