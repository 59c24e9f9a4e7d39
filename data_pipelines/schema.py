"""The pre-tokenized shard format: one versioned example schema and its JSON spec.

Shards are TFRecord files of `tf.train.Example`s, readable with plain `tf.data` (no vp-jax
code needed): every token array is an int64 list with a sibling `<name>_shape` int64 list.
Next to the shards, `spec.json` records the schema version, the vocabulary layout, the
tokenizer checkpoints that made the ids, the token geometry and per-split counts, so a
trainer can refuse shards that do not match its vocabulary.

Fields of one example (all optional except clip_id; a task reads the ones it needs):
  clip_id            bytes                     stable id of the source clip
  caption            bytes                     the caption text (utf-8)
  text_tokens        int [n]                   caption-tokenizer ids (text mode "tokens")
  text_embeddings    float [n, dim]            T5 encoder outputs (text mode "t5")
  video_tokens       int [t, h, w]             MAGVIT-v2 ids of the clip
  inpaint_tokens     int [t, h, w]             ids of the clip with its central box masked
  outpaint_tokens    int [t, h, w]             ids of the clip with its border masked
  structure_tokens   int [t, h, w]             ids of the flow+depth structure clip
  audio_tokens       int [levels, frames]      SoundStream ids of the clip's audio
  metadata_json      bytes                     JSON: source file, time span, ground truth
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from vp_jax.files import atomic_open

SCHEMA_VERSION = 1
SPEC_FILENAME = "spec.json"

TOKEN_FIELDS = {  # name: rank
    "text_tokens": 1,
    "video_tokens": 3,
    "inpaint_tokens": 3,
    "outpaint_tokens": 3,
    "structure_tokens": 3,
    "audio_tokens": 2,
}
FLOAT_FIELDS = {"text_embeddings": 2}
BYTES_FIELDS = ("clip_id", "caption", "metadata_json")
ALL_FIELDS = tuple(TOKEN_FIELDS) + tuple(FLOAT_FIELDS) + BYTES_FIELDS


def encode_example(example: Mapping[str, Any], source: str = "example") -> bytes:
    """Serialises one example dict (numpy arrays / str / bytes) to tf.train.Example bytes."""
    import tensorflow as tf

    unknown = set(example) - set(ALL_FIELDS)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}; known {ALL_FIELDS}")
    if "clip_id" not in example:
        raise ValueError(f"{source}: missing required field 'clip_id'")
    feats = {}
    for name, value in example.items():
        if name in BYTES_FIELDS:
            value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
            continue
        arr = np.asarray(value)
        rank = TOKEN_FIELDS.get(name, FLOAT_FIELDS.get(name))
        if arr.ndim != rank:
            raise ValueError(f"{source}: field {name!r} must have rank {rank}, got shape {arr.shape}")
        if name in TOKEN_FIELDS:
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{source}: field {name!r} must hold integer ids, got {arr.dtype}")
            if arr.size and arr.min() < 0:
                raise ValueError(f"{source}: field {name!r} has negative ids (min {arr.min()})")
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=arr.reshape(-1)))
        else:
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{source}: field {name!r} has non-finite values")
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=arr.reshape(-1)))
        feats[name + "_shape"] = tf.train.Feature(int64_list=tf.train.Int64List(value=arr.shape))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def feature_description(fields: tuple[str, ...]) -> dict:
    """`tf.io.parse_single_example` description for the given fields (plus their shapes)."""
    import tensorflow as tf

    desc = {}
    for name in fields:
        if name in BYTES_FIELDS:
            desc[name] = tf.io.FixedLenFeature([], tf.string, default_value=b"")
        elif name in TOKEN_FIELDS or name in FLOAT_FIELDS:
            dtype = tf.int64 if name in TOKEN_FIELDS else tf.float32
            desc[name] = tf.io.VarLenFeature(dtype)
            desc[name + "_shape"] = tf.io.VarLenFeature(tf.int64)
        else:
            raise ValueError(f"unknown shard field {name!r}; known {ALL_FIELDS}")
    return desc


def parse_example(serialized, fields: tuple[str, ...]) -> dict:
    """Parses serialized examples (tf string tensor) into dense tensors of their true shape.

    Token fields come back int32, text embeddings float32, bytes fields tf.string.
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_description(fields))
    out = {}
    for name in fields:
        if name in BYTES_FIELDS:
            out[name] = parsed[name]
            continue
        rank = TOKEN_FIELDS.get(name, FLOAT_FIELDS.get(name))
        values = tf.sparse.to_dense(parsed[name])
        shape = tf.cast(tf.sparse.to_dense(parsed[name + "_shape"]), tf.int32)
        # A field the example lacks (e.g. audio of a silent clip) parses as a zero-size
        # array of the field's rank, so a reader can tell absent from present.
        shape = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]
        values = tf.reshape(values, shape)
        out[name] = tf.cast(values, tf.int32) if name in TOKEN_FIELDS else values
        out[name].set_shape([None] * rank)
    return out


@dataclasses.dataclass
class ShardSpec:
    """Contents of spec.json beside the shards.

    vocabulary: `Vocabulary.to_dict()`; tokenizers: checkpoint ids by modality
    ({'video': ..., 'audio': ..., 'text': {'kind': 'tokens'|'t5', ...}});
    geometry: {'video_latent_shape': [t,h,w], 'audio_shape': [levels, frames],
    'text_length': n, 'text_embedding_dim': d or 0}; splits: {name: {'files': [...],
    'num_examples': n}} with file names relative to the spec's directory.
    """

    vocabulary: dict
    tokenizers: dict
    geometry: dict
    splits: dict
    fields: list
    schema_version: int = SCHEMA_VERSION
    extra: dict = dataclasses.field(default_factory=dict)

    def write(self, directory: str) -> str:
        path = os.path.join(directory, SPEC_FILENAME)
        with atomic_open(path) as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)
        return path

    @classmethod
    def read(cls, directory: str) -> "ShardSpec":
        path = os.path.join(directory, SPEC_FILENAME)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no shard spec at {path}: is {directory!r} a pre-tokenized dataset?")
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{path}: field 'schema_version' is {d.get('schema_version')!r}, "
                             f"this code reads version {SCHEMA_VERSION}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d and n not in ("extra", "schema_version")]
        if missing:
            raise ValueError(f"{path}: missing field(s) {missing}")
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
        return cls(**d)

    def split_files(self, directory: str, split: str) -> list[str]:
        if split not in self.splits:
            raise ValueError(f"{os.path.join(directory, SPEC_FILENAME)}: no split {split!r}; "
                             f"have {sorted(self.splits)}")
        files = [os.path.join(directory, f) for f in self.splits[split]["files"]]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise FileNotFoundError(f"{directory}: split {split!r} lists missing shard(s) {missing[:3]}")
        return files
