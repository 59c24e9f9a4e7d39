"""2D -> causal 3D inflation: start the video tokenizer from the image tokenizer.

MAGVIT-v2 trains on images first, then inflates every 2D kernel to a causal 3D kernel by
placing it in the last temporal slot (the current frame) and zeros in the earlier slots.
The inflated video model then maps every frame exactly as the image model did, and video
training only has to learn how to use the past.

The image model is the same architecture with `temporal_kernel_size=1` and no temporal
down-sampling. Kernels [1, kh, kw, cin, cout] become [kt, kh, kw, cin, cout]. A
depth-to-space layer that also up-samples time has ft times more output channels, laid out
(ft, fs, fs, C): the image kernel and bias are tiled over ft, so each new frame starts as a
copy of the image decoder's output. Parameters with no image counterpart (a conv that only
down-samples time) keep their fresh initialisation and are returned by name.
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


def inflate_params(image_params, video_params):
  """Returns (video-shaped params initialised from `image_params`, names kept from `video_params`).

  Both are flax param trees (nested dicts); `video_params` supplies shapes and the values of
  parameters the image model lacks.
  """
  image_flat = {jax.tree_util.keystr(p): leaf
                for p, leaf in jax.tree_util.tree_leaves_with_path(image_params)}
  unmatched = []

  def visit(path, video_leaf):
    name = jax.tree_util.keystr(path)
    if name not in image_flat:
      unmatched.append(name)
      return video_leaf
    return _inflate_leaf(name, image_flat[name], video_leaf)

  return jax.tree_util.tree_map_with_path(visit, video_params), unmatched
