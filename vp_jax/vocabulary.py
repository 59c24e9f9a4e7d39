"""The unified vocabulary: one id space for special markers, visual, audio and text tokens.

VideoPoet's LM reads and writes every modality as ids of ONE vocabulary. This module is
the only place that knows where each modality's ids live; every other module asks it.

Layout (contiguous ranges, in this order)::

    [0, 256)                               special ids: markers, task tokens, padding
    [256, 256 + 2**visual_bits)            visual: MAGVIT-v2 LFQ ids
    [.., .. + audio_levels * codebook)     audio: SoundStream RVQ ids, one disjoint block per level
    [.., .. + text_vocab_size)             text: caption-tokenizer ids ("tokens" text mode)

`size` is the number of real ids; `padded_size` rounds it up to a multiple of 128 so the
embedding and logits matrices tile well on accelerators (the extra rows are never a target
and the sampler never draws them).

Audio is flattened level-major as in VideoPoet: all frames of level 0, then level 1, ...
Level l's codes live in their own block, so an id alone says which level it belongs to.

Example with visual_bits=2, audio_levels=2, audio_codebook_size=3, text_vocab_size=5::

    visual ids 0..3     -> vocab 256..259
    audio [[0, 2],      -> level-major [0, 2, 1, 0] -> offsets [0, 0, 3, 3]
           [1, 0]]         -> vocab [260, 262, 264, 263]
    text ids 0..4       -> vocab 266..270;  size = 271, padded_size = 384
"""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Mapping

import numpy as np

NUM_SPECIAL = 256
FIRST_TASK_TOKEN = 64
MAX_TASKS = NUM_SPECIAL - FIRST_TASK_TOKEN

# Markers of the VideoPoet sequence layout (paper section 3), plus our own:
# <text_emb> is the input id at slots whose embedding is replaced by a projected T5
# embedding; <res> marks portrait outputs; <source> is reserved for a data-source tag.
MARKERS = (
    "<pad>", "<bos>", "<eos>",
    "<bot_i>", "<eot_i>", "<bov_i>", "<eov_i>", "<boa_i>", "<eoa_i>",
    "<source>", "<res>",
    "<bov_o>", "<eov_o>", "<boa_o>", "<eoa_o>",
    "<text_emb>",
)


class Modality(enum.IntEnum):
    """Per-token modality codes carried in the batch (`input_modality`, `target_modality`)."""

    PAD = 0
    SPECIAL = 1
    TEXT = 2
    TEXT_EMBEDDING = 3
    VISUAL = 4
    AUDIO = 5


NUM_MODALITIES = len(Modality)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Id layout computed from the tokenizer settings.

    Attributes:
      visual_bits: K of the LFQ video tokenizer; 2**K visual ids.
      audio_levels: number of RVQ levels of the audio tokenizer.
      audio_codebook_size: codes per RVQ level.
      text_vocab_size: ids of the caption tokenizer (0 when text comes only as T5 embeddings).
    """

    visual_bits: int
    audio_levels: int
    audio_codebook_size: int
    text_vocab_size: int

    def __post_init__(self):
        for name in ("visual_bits", "audio_levels", "audio_codebook_size", "text_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Vocabulary.{name} must be a non-negative int, got {value!r}")
        if not 1 <= self.visual_bits <= 24:
            raise ValueError(f"Vocabulary.visual_bits must be in [1, 24], got {self.visual_bits}")

    # ----------------------------------------------------------------- ranges
    @property
    def visual_size(self) -> int:
        return 2 ** self.visual_bits

    @property
    def audio_size(self) -> int:
        return self.audio_levels * self.audio_codebook_size

    @property
    def visual_range(self) -> tuple[int, int]:
        return NUM_SPECIAL, NUM_SPECIAL + self.visual_size

    @property
    def audio_range(self) -> tuple[int, int]:
        start = self.visual_range[1]
        return start, start + self.audio_size

    def audio_level_range(self, level: int) -> tuple[int, int]:
        if not 0 <= level < self.audio_levels:
            raise ValueError(f"audio level {level} outside [0, {self.audio_levels})")
        start = self.audio_range[0] + level * self.audio_codebook_size
        return start, start + self.audio_codebook_size

    @property
    def text_range(self) -> tuple[int, int]:
        start = self.audio_range[1]
        return start, start + self.text_vocab_size

    @property
    def size(self) -> int:
        return self.text_range[1]

    @property
    def padded_size(self) -> int:
        return -(-self.size // 128) * 128

    # --------------------------------------------------------------- specials
    def token(self, marker: str) -> int:
        """Id of a marker such as '<bov_o>'."""
        try:
            return MARKERS.index(marker)
        except ValueError:
            raise KeyError(f"unknown marker {marker!r}; known: {', '.join(MARKERS)}") from None

    @property
    def pad(self) -> int:
        return self.token("<pad>")

    @property
    def bos(self) -> int:
        return self.token("<bos>")

    @property
    def eos(self) -> int:
        return self.token("<eos>")

    @staticmethod
    def task_token(task_index: int) -> int:
        if not 0 <= task_index < MAX_TASKS:
            raise ValueError(f"task index {task_index} outside [0, {MAX_TASKS})")
        return FIRST_TASK_TOKEN + task_index

    # ------------------------------------------------------------ conversions
    def visual_to_vocab(self, ids, field: str = "visual ids") -> np.ndarray:
        """LFQ ids in [0, 2**K) -> vocabulary ids; any shape."""
        ids = np.asarray(ids)
        _check_range(ids, 0, self.visual_size, field)
        return (ids + self.visual_range[0]).astype(np.int32)

    def vocab_to_visual(self, ids, field: str = "visual vocabulary ids") -> np.ndarray:
        ids = np.asarray(ids)
        _check_range(ids, *self.visual_range, field)
        return (ids - self.visual_range[0]).astype(np.int32)

    def audio_to_vocab(self, ids, field: str = "audio ids") -> np.ndarray:
        """RVQ ids [..., levels, frames] -> level-major vocabulary ids [..., levels * frames]."""
        ids = np.asarray(ids)
        if ids.ndim < 2 or ids.shape[-2] != self.audio_levels:
            raise ValueError(
                f"{field}: expected shape [..., {self.audio_levels} levels, frames], got {ids.shape}")
        _check_range(ids, 0, self.audio_codebook_size, field)
        offsets = self.audio_range[0] + self.audio_codebook_size * np.arange(self.audio_levels)
        shifted = ids + offsets[:, None]
        return shifted.reshape(*ids.shape[:-2], -1).astype(np.int32)

    def vocab_to_audio(self, ids, field: str = "audio vocabulary ids") -> np.ndarray:
        """Level-major vocabulary ids [..., levels * frames] -> RVQ ids [..., levels, frames]."""
        ids = np.asarray(ids)
        if ids.shape[-1] % self.audio_levels:
            raise ValueError(
                f"{field}: length {ids.shape[-1]} is not a multiple of {self.audio_levels} levels")
        grid = ids.reshape(*ids.shape[:-1], self.audio_levels, -1)
        offsets = self.audio_range[0] + self.audio_codebook_size * np.arange(self.audio_levels)
        for level in range(self.audio_levels):
            _check_range(grid[..., level, :], *self.audio_level_range(level), f"{field} level {level}")
        return (grid - offsets[:, None]).astype(np.int32)

    def text_to_vocab(self, ids, field: str = "text ids") -> np.ndarray:
        ids = np.asarray(ids)
        _check_range(ids, 0, self.text_vocab_size, field)
        return (ids + self.text_range[0]).astype(np.int32)

    def vocab_to_text(self, ids, field: str = "text vocabulary ids") -> np.ndarray:
        ids = np.asarray(ids)
        _check_range(ids, *self.text_range, field)
        return (ids - self.text_range[0]).astype(np.int32)

    def modality_of(self, ids) -> np.ndarray:
        """Modality code (see `Modality`) of each vocabulary id; any shape."""
        ids = np.asarray(ids)
        out = np.full(ids.shape, Modality.SPECIAL, np.int32)
        out[ids == self.pad] = Modality.PAD
        out[ids == self.token("<text_emb>")] = Modality.TEXT_EMBEDDING
        for modality, (lo, hi) in ((Modality.VISUAL, self.visual_range),
                                   (Modality.AUDIO, self.audio_range),
                                   (Modality.TEXT, self.text_range)):
            out[(ids >= lo) & (ids < hi)] = modality
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"vocabulary ids outside [0, {self.size}): "
                             f"min {ids.min()}, max {ids.max()}")
        return out

    # ------------------------------------------------------------- round trip
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "vocabulary spec") -> "Vocabulary":
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [f for f in fields if f not in d]
        if missing:
            raise ValueError(f"{source}: missing field(s) {missing}; expected {fields}")
        return cls(**{f: int(d[f]) for f in fields})


def _check_range(ids: np.ndarray, lo: int, hi: int, field: str) -> None:
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{field}: expected integer ids, got dtype {ids.dtype}")
    if ids.size and (ids.min() < lo or ids.max() >= hi):
        raise ValueError(f"{field}: ids must lie in [{lo}, {hi}), got min {ids.min()}, max {ids.max()}")
