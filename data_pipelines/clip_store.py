"""Decoded clips on disk (pixels + sound), the output of ingestion without tokenizers.

The tokenizer trainers and a later pre-tokenization both read these, so a media folder is
decoded once. Records are TFRecord `tf.train.Example`s, readable with plain `tf.data`:
  clip_id, caption, metadata_json   bytes
  video                             bytes: raw uint8 [T, H, W, 3] (C order)
  video_shape                       int64 [4]
  audio                             float list [samples] (empty when the clip has no sound)
Shards and resume logic are the pipeline's (data_pipelines.beam_pipeline); this module
converts clips to and from records and lists a store's shards (clips_spec.json).
"""
from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines.clip_sources import Clip
from vp_jax.files import atomic_open

KIND = "raw_clips"
STORE_SPEC_FILENAME = "clips_spec.json"


def encode_clip(clip: Clip) -> bytes:
    import tensorflow as tf

    video = np.ascontiguousarray(clip.video, np.uint8)
    audio = np.zeros([0], np.float32) if clip.audio is None else np.asarray(clip.audio, np.float32)
    meta = {**clip.metadata, "split": clip.split}

    def b(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    feats = {
        "clip_id": b(clip.clip_id.encode()), "caption": b(clip.caption.encode()),
        "metadata_json": b(json.dumps(meta, sort_keys=True).encode()),
        "video": b(video.tobytes()),
        "video_shape": tf.train.Feature(int64_list=tf.train.Int64List(value=video.shape)),
        "audio": tf.train.Feature(float_list=tf.train.FloatList(value=audio)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def decode_clip(record: bytes, source: str = "record") -> Clip:
    import tensorflow as tf

    try:
        example = tf.train.Example.FromString(record)
    except Exception as e:  # protobuf raises its own DecodeError
        raise ValueError(f"{source}: not a tf.train.Example ({e})") from None
    f = example.features.feature
    missing = [k for k in ("clip_id", "video", "video_shape", "metadata_json") if k not in f]
    if missing:
        raise ValueError(f"{source}: raw clip record lacks field(s) {missing}")
    shape = tuple(f["video_shape"].int64_list.value)
    data = f["video"].bytes_list.value[0]
    if len(shape) != 4 or shape[-1] != 3 or int(np.prod(shape)) != len(data):
        raise ValueError(f"{source}: video_shape {shape} does not match {len(data)} video bytes")
    audio = np.asarray(f["audio"].float_list.value, np.float32)
    meta = json.loads(f["metadata_json"].bytes_list.value[0])
    return Clip(clip_id=f["clip_id"].bytes_list.value[0].decode(), split=meta.pop("split", "train"),
                video=np.frombuffer(data, np.uint8).reshape(shape),
                audio=audio if audio.size else None,
                caption=f["caption"].bytes_list.value[0].decode(), metadata=meta)


class RawClipEncoder:
    """The pipeline encoder for ingestion without tokenizers: pixels + sound as records."""

    batch_size = 1

    def setup(self) -> None:
        pass

    def batch_key(self, clip: Clip) -> None:
        return None

    def encode(self, clips: list[Clip]) -> list[tuple[bytes, dict]]:
        return [(encode_clip(c), {"video_shape": list(c.video.shape),
                                  "has_audio": c.audio is not None}) for c in clips]

    def describe(self) -> dict:
        return {"kind": KIND, "version": 1}


class ClipStoreUnit:
    """Every clip of one raw-clip shard written by ingestion (for pre-tokenizing it later)."""

    def __init__(self, path: str, split: str):
        self.path, self.split = path, split

    @property
    def key(self) -> str:
        return "clips-" + os.path.basename(self.path)

    def produce(self) -> tuple[list[Clip], dict]:
        import tensorflow as tf

        report = {"source": self.path, "path": self.path, "kind": "raw_clips", "split": self.split}
        clips = []
        try:
            for i, record in enumerate(tf.data.TFRecordDataset(self.path).as_numpy_iterator()):
                clips.append(decode_clip(record, f"{self.path}[{i}]"))
        except (tf.errors.OpError, ValueError) as e:
            return [], {**report, "status": "skipped", "reason": f"{self.path}: {e}"}
        return clips, {**report, "status": "ok", "clips": len(clips),
                       "clip_ids": [c.clip_id for c in clips]}


def store_units(directory: str) -> list[ClipStoreUnit]:
    """Units for every shard listed in a raw-clip store's spec (see `write_store_spec`)."""
    path = os.path.join(directory, STORE_SPEC_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no raw clip store spec at {path}: run data_pipelines.ingest first")
    with open(path) as f:
        spec = json.load(f)
    if spec.get("kind") != KIND:
        raise ValueError(f"{path}: field 'kind' is {spec.get('kind')!r}, expected {KIND!r}")
    return [ClipStoreUnit(os.path.join(directory, name), split)
            for split, entry in sorted(spec["splits"].items()) for name in entry["files"]]


def write_store_spec(directory: str, splits: dict, geometry: dict) -> str:
    path = os.path.join(directory, STORE_SPEC_FILENAME)
    with atomic_open(path) as f:
        json.dump({"kind": KIND, "version": 1, "splits": splits, "geometry": geometry}, f,
                  indent=2, sort_keys=True)
    return path
