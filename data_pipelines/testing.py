"""Synthetic, learnable pre-tokenized shards for tests of the input pipeline and trainer.

Real TFRecord shards and spec.json written through `data_pipelines.schema`, so tests
exercise the exact reading path of real data, but tiny and instant to make. Every clip has
every field every VideoPoet task needs, and the tokens follow a simple rule a small LM
learns in a few hundred steps:

  caption      "the digit <d> moves <direction> [quickly]"  (5 or 6 words)
  video_tokens [t, h, w]      (3*d + r + s + t*(r+1) + h*w_size + w) mod 2**visual_bits
  audio_tokens [levels, f]    (d + 3*level + f*(r+1)) mod codebook
  inpaint / outpaint tokens   video with the centre box / the border set to id 0
  structure_tokens            video // 2 (the coarse shape; text tells the rest)

with d the digit, r the direction index and s 1 when "quickly". Text is caption-tokenizer
ids (`text_mode='tokens'`) or a fixed per-word embedding table (`text_mode='t5'`), so the
same rule holds in both text modes.
"""
from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines import schema
from vp_jax.tasks import Geometry
from vp_jax.vocabulary import Vocabulary

WORDS = ("the", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine", "moves", "left", "right", "up", "down", "quickly")
DIRECTIONS = ("left", "right", "up", "down")
TEXT_EMBEDDING_DIM = 8
DEFAULT_GEOMETRY = Geometry(video_latent_shape=(3, 2, 2), audio_shape=(2, 6), text_length=6)
DEFAULT_VOCAB = Vocabulary(visual_bits=4, audio_levels=2, audio_codebook_size=8,
                           text_vocab_size=len(WORDS))
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1, "test": 2}


def synthetic_clip(digit: int, direction: int, quick: bool, geometry: Geometry,
                   vocab: Vocabulary) -> dict[str, np.ndarray | str]:
    """The fields of one synthetic clip (raw tokenizer ids, not vocabulary ids)."""
    words = ["the", "digit", WORDS[2 + digit], "moves", DIRECTIONS[direction]]
    words += ["quickly"] if quick else []
    t, h, w = geometry.video_latent_shape
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    video = (3 * digit + direction + int(quick) + tt * (direction + 1) + hh * w + ww)
    video = (video % vocab.visual_size).astype(np.int32)
    box_h = slice(h // 4, h // 4 + max(1, h // 2))
    box_w = slice(w // 4, w // 4 + max(1, w // 2))
    inpaint = video.copy()
    inpaint[:, box_h, box_w] = 0
    outpaint = np.zeros_like(video)
    outpaint[:, box_h, box_w] = video[:, box_h, box_w]
    levels, frames = geometry.audio_shape
    ll, ff = np.meshgrid(np.arange(levels), np.arange(frames), indexing="ij")
    audio = ((digit + 3 * ll + ff * (direction + 1)) % vocab.audio_codebook_size).astype(np.int32)
    return {
        "caption": " ".join(words),
        "text_tokens": np.array([WORDS.index(x) for x in words], np.int32),
        "video_tokens": video,
        "inpaint_tokens": inpaint,
        "outpaint_tokens": outpaint,
        "structure_tokens": video // 2,
        "audio_tokens": audio,
    }


def word_embeddings(dim: int = TEXT_EMBEDDING_DIM) -> np.ndarray:
    """The fixed stand-in for T5: one float32 [dim] row per word of `WORDS`."""
    return np.random.default_rng(1234).normal(size=[len(WORDS), dim]).astype(np.float32)


def write_synthetic_shards(directory: str, num_examples: int = 64, seed: int = 0,
                           geometry: Geometry | None = None, vocab: Vocabulary | None = None,
                           text_mode: str = "tokens", num_shards: int = 2,
                           silent_every: int = 0) -> schema.ShardSpec:
    """Writes train/validation/test TFRecord shards and spec.json into `directory`.

    Args:
      num_examples: train clips; validation and test get max(4, num_examples // 4) each.
      text_mode: 'tokens' writes text_tokens; 't5' writes text_embeddings
        [words, TEXT_EMBEDDING_DIM] instead.
      num_shards: TFRecord files per split (examples dealt round-robin).
      silent_every: when > 0, every n-th clip has no audio_tokens (a clip without sound),
        so audio tasks must skip it.
    """
    import tensorflow as tf

    geometry = geometry or DEFAULT_GEOMETRY
    vocab = vocab or DEFAULT_VOCAB
    if text_mode not in ("tokens", "t5"):
        raise ValueError(f"text_mode must be 'tokens' or 't5', got {text_mode!r}")
    if geometry.text_length < 6:
        raise ValueError(f"geometry.text_length must be >= 6 (longest synthetic caption), "
                         f"got {geometry.text_length}")
    if vocab.text_vocab_size < len(WORDS):
        raise ValueError(f"vocab.text_vocab_size must be >= {len(WORDS)}, got {vocab.text_vocab_size}")
    if num_examples < 1 or num_shards < 1:
        raise ValueError(f"num_examples and num_shards must be >= 1, got {num_examples}, {num_shards}")
    os.makedirs(directory, exist_ok=True)
    embeddings = word_embeddings()
    splits = {}
    for split, offset in SPLIT_SEED_OFFSETS.items():
        count = num_examples if split == "train" else max(4, num_examples // 4)
        rng = np.random.default_rng([seed, offset])
        files = [f"{split}.tfrecord-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(directory, f)) for f in files]
        for i in range(count):
            digit, direction, quick = int(rng.integers(10)), int(rng.integers(4)), bool(rng.integers(2))
            clip = synthetic_clip(digit, direction, quick, geometry, vocab)
            if text_mode == "t5":
                clip["text_embeddings"] = embeddings[clip.pop("text_tokens")]
            if silent_every and i % silent_every == silent_every - 1:
                del clip["audio_tokens"]
            truth = {"digit": digit, "direction": DIRECTIONS[direction],
                     "speed_px_per_frame": 2.0 if quick else 1.0}
            clip["clip_id"] = f"{split}-{seed}-{i:05d}"
            clip["metadata_json"] = json.dumps({"truth": truth})
            writers[i % num_shards].write(schema.encode_example(clip, source=clip["clip_id"]))
        for w in writers:
            w.close()
        splits[split] = {"files": files, "num_examples": count}
    text_field = "text_embeddings" if text_mode == "t5" else "text_tokens"
    fields = ["clip_id", "caption", text_field, "video_tokens", "inpaint_tokens",
              "outpaint_tokens", "structure_tokens", "audio_tokens", "metadata_json"]
    spec = schema.ShardSpec(
        vocabulary=vocab.to_dict(),
        tokenizers={"video": "synthetic", "audio": "synthetic",
                    "text": {"kind": text_mode, "words": list(WORDS)}},
        geometry={"video_latent_shape": list(geometry.video_latent_shape),
                  "audio_shape": list(geometry.audio_shape),
                  "text_length": geometry.text_length,
                  "text_embedding_dim": TEXT_EMBEDDING_DIM if text_mode == "t5" else 0},
        splits=splits, fields=fields, extra={"generator": "data_pipelines.testing"})
    spec.write(directory)
    return spec
