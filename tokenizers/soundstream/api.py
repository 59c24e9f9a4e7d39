"""AudioTokenizer: the trained SoundStream as the rest of vp-jax sees it (numpy in, numpy out).

    tok = AudioTokenizer.load("/tmp/soundstream_demo/checkpoints")
    ids = tok.encode(wave)          # float32 [B, samples] in [-1, 1] -> int32 [B, levels, frames]
    wave_hat = tok.decode(ids)      # int32 [B, levels, frames] -> float32 [B, frames * hop]

Crop policy: frames = samples // hop_length. The trailing samples % hop_length samples
(less than one frame) are dropped, so a 2.125 s clip at 16 kHz (34000 samples) gives 106
frames at hop 320 (the paper's 106) and 53 at hop 640; decode returns frames * hop_length
samples (33920 at hop 320), and callers that need the original length pad the tail.

ids are per level in [0, codebook_size); the unified vocabulary (vp_jax.vocabulary) owns the
level-major flattening and the offsets. decode also accepts fewer levels than trained
([B, n, frames], n <= levels) for a lower bit rate.

Checkpoint layout (written by train.py): a vp_jax Checkpointer directory whose state has
fields `params` and `codebook` (the generator's variable collections) and whose metadata
holds the resolved training config under 'config'.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vp_jax.checkpointing import Checkpointer, restore_params

from .model import SoundStream, init_soundstream, soundstream_from_config


def restore_config(checkpoint_dir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """The resolved training config saved with a checkpoint, and the step (default: latest)."""
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"SoundStream checkpoint directory {checkpoint_dir!r} does not exist")
    with Checkpointer(checkpoint_dir) as checkpointer:
        steps = checkpointer.all_steps()
        if not steps or (step is not None and step not in steps):
            raise FileNotFoundError(f"SoundStream checkpoint directory {checkpoint_dir!r}: no step "
                                    f"{'at all' if step is None else step} (steps found: {steps})")
        step = steps[-1] if step is None else int(step)
        metadata = checkpointer.restore_metadata(step)
    if "config" not in metadata:
        raise ValueError(f"{checkpoint_dir}/{step}: checkpoint metadata has no 'config'; not written "
                         "by vp_tokenizers.soundstream.train")
    return ml_collections.ConfigDict(metadata["config"]), step


def restore_variables(checkpoint_dir: str, config, step: int) -> dict:
    """Only the generator's variables {'params', 'codebook'?} of checkpoint `step`."""
    model = soundstream_from_config(config.model)
    abstract = jax.eval_shape(lambda: init_soundstream(model, jax.random.key(0), model.hop_length))
    on_one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_one_device),
                            abstract)
    step_dir = os.path.join(os.path.abspath(checkpoint_dir), str(step))
    return {collection: restore_params(step_dir, tree, params_key=collection)
            for collection, tree in abstract.items()}


class AudioTokenizer:
    """Encodes waves to RVQ ids and back with fixed SoundStream variables."""

    def __init__(self, config: ml_collections.ConfigDict, variables: dict, checkpoint_id: str):
        self.config = config
        self.model: SoundStream = soundstream_from_config(config.model)
        self.variables = variables
        self.sample_rate = int(config.sample_rate)
        self.hop_length = self.model.hop_length
        self.levels = int(config.model.levels)
        self.codebook_size = int(config.model.codebook_size)
        self.checkpoint_id = checkpoint_id
        self._encode = jax.jit(lambda v, w: self.model.apply(v, w, method=SoundStream.encode))
        self._decode = jax.jit(lambda v, ids, n: self.model.apply(v, ids, n, method=SoundStream.decode))

    @classmethod
    def load(cls, checkpoint_dir: str, step: int | None = None) -> "AudioTokenizer":
        """Restores the generator variables of a training run (latest step by default)."""
        config, step = restore_config(checkpoint_dir, step)
        variables = restore_variables(checkpoint_dir, config, step)
        return cls(config, variables, f"soundstream:{os.path.abspath(checkpoint_dir)}@{step}")

    def with_variables(self, variables: dict) -> "AudioTokenizer":
        """A tokenizer with other weights of the same model, reusing the compiled functions."""
        other = object.__new__(AudioTokenizer)
        other.__dict__.update(self.__dict__)
        other.variables = variables
        return other

    def num_frames(self, num_samples: int) -> int:
        """Latent frames for a wave of num_samples samples (crop policy: floor)."""
        if num_samples < self.hop_length:
            raise ValueError(f"AudioTokenizer: {num_samples} samples is shorter than one frame "
                             f"(hop_length {self.hop_length})")
        return num_samples // self.hop_length

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """float32 [B, samples] in [-1, 1] -> int32 [B, levels, samples // hop_length]."""
        wave = np.asarray(wave)
        if wave.ndim != 2 or not np.issubdtype(wave.dtype, np.floating):
            raise ValueError(f"AudioTokenizer.encode: expected float [batch, samples], got "
                             f"{wave.dtype} {wave.shape}")
        if not np.all(np.isfinite(wave)):
            raise ValueError("AudioTokenizer.encode: wave contains NaN or Inf")
        usable = self.num_frames(wave.shape[1]) * self.hop_length
        ids = self._encode(self.variables, jnp.asarray(wave[:, :usable], jnp.float32))
        return np.asarray(ids).transpose(0, 2, 1).astype(np.int32)

    def decode(self, ids: np.ndarray) -> np.ndarray:
        """int32 [B, n, frames] (n <= levels, ids in [0, codebook_size)) -> float32 [B, frames * hop]."""
        ids = np.asarray(ids)
        if ids.ndim != 3 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"AudioTokenizer.decode: expected int [batch, levels, frames], got "
                             f"{ids.dtype} {ids.shape}")
        if not 1 <= ids.shape[1] <= self.levels or ids.shape[2] == 0:
            raise ValueError(f"AudioTokenizer.decode: ids shape {ids.shape}: expected 1..{self.levels} "
                             "levels and at least one frame")
        if ids.size and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"AudioTokenizer.decode: ids range [{ids.min()}, {ids.max()}] outside "
                             f"[0, {self.codebook_size})")
        # Missing levels are padded with id 0 and masked out: one program for every bit rate.
        full = np.zeros((ids.shape[0], self.levels, ids.shape[2]), np.int32)
        full[:, : ids.shape[1]] = ids
        wave = self._decode(self.variables, jnp.asarray(full.transpose(0, 2, 1)),
                            jnp.asarray(ids.shape[1], jnp.int32))
        return np.asarray(wave, np.float32)
