"""`VideoTokenizer`: the inference API the data pipeline and the samplers use.

    tok = VideoTokenizer.load("/work/run/magvit2_demo/checkpoints")      # EMA weights
    ids = tok.encode(clips)          # uint8 [B, 17, 32, 32, 3] -> int32 [B, 5, 8, 8] in [0, 2^K)
    video = tok.decode(ids)          # int32 [B, 5, 8, 8]      -> uint8 [B, 17, 32, 32, 3]

Images are 1-frame videos; portrait and landscape both work (any height and width that are
multiples of the spatial factor). Masked clips and structure clips (flow + depth as RGB)
go through the same `encode`. Calls are jitted per input shape and run in fixed-size
chunks of `batch_size` (the last chunk padded), so a data pipeline feeding batches of
varying size compiles once. Encoding is deterministic: the same pixels give the same ids.
"""
import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from vp_tokenizers.magvit2 import lfq
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config, check_video


def params_fingerprint(params) -> str:
  """sha256 over every parameter's name, shape and bytes: equal params give equal ids."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaf = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _jitted_encode_decode(config: Magvit2Config):
  """(encode, decode) jitted once per config, shared by every tokenizer with that config."""
  model = Magvit2(config)
  encode = jax.jit(lambda p, x: lfq.ids_from_latents(model.apply(p, x, method=Magvit2.encode)))
  decode = jax.jit(lambda p, ids: model.apply(p, lfq.bits_from_ids(ids, config.num_bits),
                                              method=Magvit2.decode))
  return encode, decode


class VideoTokenizer:
  """MAGVIT-v2 encode/decode with fixed parameters (normally the EMA weights of a checkpoint)."""

  def __init__(self, config: Magvit2Config, params, checkpoint_id: str | None = None,
               batch_size: int = 8):
    if batch_size < 1:
      raise ValueError(f"VideoTokenizer: batch_size must be >= 1, got {batch_size}")
    self.config = config
    self.bits = config.num_bits
    self.batch_size = batch_size
    self._params = jax.device_put(params)
    self.checkpoint_id = checkpoint_id or f"magvit2-k{self.bits}-{params_fingerprint(params)[:16]}"
    self._encode, self._decode = _jitted_encode_decode(config)

  @classmethod
  def load(cls, checkpoint_dir: str, step: int | None = None, batch_size: int = 8) -> "VideoTokenizer":
    """Loads the EMA weights of `step` (default: latest) from a tokenizer training directory."""
    from vp_jax import checkpointing  # pylint: disable=g-import-not-at-top
    checkpoint_dir = os.path.abspath(os.path.expanduser(checkpoint_dir))
    if not os.path.isdir(checkpoint_dir):
      raise FileNotFoundError(f"VideoTokenizer.load: checkpoint directory not found: {checkpoint_dir}")
    ckpt = checkpointing.Checkpointer(checkpoint_dir, async_save=False)
    try:
      metadata = ckpt.restore_metadata(step)
      step = ckpt.latest_step() if step is None else step
    finally:
      ckpt.close()
    if "model_config" not in metadata:
      raise ValueError(f"VideoTokenizer.load: {checkpoint_dir}/{step} has no 'model_config' in its "
                       "metadata; it was not written by vp_tokenizers.magvit2.train")
    config = Magvit2Config.from_dict(metadata["model_config"])
    if metadata.get("phase") == "image":
      raise ValueError(f"VideoTokenizer.load: {checkpoint_dir}/{step} is from the image phase "
                       "(before 2D->3D inflation); load a later step")
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        jax.eval_shape(lambda: Magvit2(config).init(jax.random.PRNGKey(0), jnp.zeros(
            (1, 1, config.spatial_factor, config.spatial_factor, config.in_channels)))))
    params = checkpointing.restore_params(os.path.join(checkpoint_dir, str(step)), abstract,
                                          params_key="ema_params")
    return cls(config, params, checkpoint_id=f"magvit2-k{config.num_bits}-step{step}-"
               f"{params_fingerprint(params)[:16]}", batch_size=batch_size)

  def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    return self.config.latent_shape(num_frames, height, width)

  def _chunks(self, fn, array: np.ndarray) -> np.ndarray:
    outputs = []
    for start in range(0, array.shape[0], self.batch_size):
      chunk = array[start:start + self.batch_size]
      rows = chunk.shape[0]
      if rows < self.batch_size:
        pad = np.repeat(chunk[-1:], self.batch_size - rows, axis=0)
        chunk = np.concatenate([chunk, pad])
      outputs.append(np.asarray(fn(self._params, chunk))[:rows])
    return np.concatenate(outputs)

  def encode(self, video: np.ndarray) -> np.ndarray:
    """uint8 [B, T, H, W, 3] (or float32 in [0, 1]), T = 1 + 4n or 1 -> int32 ids [B, t, h, w]."""
    video = np.asarray(video)
    check_video(video, self.config)
    if video.shape[0] == 0:
      raise ValueError("video: empty batch")
    if video.dtype == np.uint8:
      pixels = video.astype(np.float32) / 127.5 - 1.0
    elif video.dtype in (np.float32, np.float64):
      lo, hi = float(video.min()), float(video.max())
      if lo < 0.0 or hi > 1.0 or not np.isfinite(lo + hi):
        raise ValueError(f"float video must lie in [0, 1], found values in [{lo}, {hi}]")
      pixels = video.astype(np.float32) * 2.0 - 1.0
    else:
      raise TypeError(f"video must be uint8 or float32 in [0, 1], got dtype {video.dtype}")
    return self._chunks(self._encode, pixels).astype(np.int32)

  def decode(self, ids: np.ndarray) -> np.ndarray:
    """int32 ids [B, t, h, w] in [0, 2^K) -> uint8 video [B, 1 + ft*(t-1), fs*h, fs*w, 3]."""
    ids = np.asarray(ids)
    if ids.ndim != 4 or ids.shape[0] == 0:
      raise ValueError(f"ids must have rank 4 [batch, time, height, width] with batch >= 1, "
                       f"got shape {ids.shape}")
    lfq.check_ids_in_range(ids, self.bits)
    video = self._chunks(self._decode, ids.astype(np.int32))
    return np.round((np.clip(video, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
