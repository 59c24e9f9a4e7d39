"""The model's batch contract: (prefix, output) ids -> the arrays the transformer reads.

Every batch the model sees, in training, evaluation and sampling, has these features, all
[batch, length] unless noted:

  input_tokens     int32    ids fed to the model (0 = <pad>)
  target_tokens    int32    the next id at each position (teacher forcing)
  loss_weights     float32  1 where the target is an output token, else 0
  prefix_mask      int32    1 inside the bidirectional prefix, 0 in the causal output
  segment_ids      int32    1, 2, .. per packed example; 0 = padding
  positions        int32    position within the segment
  input_modality   int32    `Modality` of the input id
  target_modality  int32    `Modality` of the target id (PAD where there is no target)
  task_ids         int32    task index of the position's example
  text_embeddings  float32  [batch, text_length, dim], only in "t5" text mode: row j fills
                            the j-th `<text_emb>` slot of the example

Attention (masks as data): query q may attend key k iff segment_ids agree and are non-zero
and (k <= q or both are in the prefix).

Shifting. The full sequence is s = inputs ++ targets (inputs start with <bos>); position i
reads s[i] and predicts s[i+1], so an example occupies len(s) - 1 positions. The last
prefix position predicts the first output id and still sees the whole prefix only.

Worked example, inputs = [1, 70, 300] (<bos>, <task>, a visual id), targets = [11, 301, 2]::

    input_tokens  = [1, 70, 300, 11, 301]
    target_tokens = [70, 300, 11, 301, 2]
    loss_weights  = [0, 0, 1, 1, 1]
    prefix_mask   = [1, 1, 1, 0, 0]
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from vp_jax.vocabulary import Modality, Vocabulary

FEATURE_DTYPES = {
    "input_tokens": np.int32,
    "target_tokens": np.int32,
    "loss_weights": np.float32,
    "prefix_mask": np.int32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "input_modality": np.int32,
    "target_modality": np.int32,
    "task_ids": np.int32,
}
TEXT_EMBEDDINGS = "text_embeddings"


def example_features(inputs: np.ndarray, targets: np.ndarray, task_index: int,
                     vocab: Vocabulary, length: int | None = None) -> dict[str, np.ndarray]:
    """Features of one example, right-padded to `length` (default: no padding).

    `targets` may be empty (a prefix for sampling): then every position is prefix and no
    position carries loss.
    """
    inputs = np.asarray(inputs, np.int32)
    targets = np.asarray(targets, np.int32)
    if inputs.ndim != 1 or targets.ndim != 1 or inputs.size == 0:
        raise ValueError(f"inputs/targets must be non-empty 1-D id arrays, got shapes "
                         f"{inputs.shape} and {targets.shape}")
    seq = np.concatenate([inputs, targets])
    n = seq.size - 1 if targets.size else seq.size
    length = n if length is None else length
    if n > length:
        raise ValueError(f"example needs {n} positions but the length group has {length}")
    target_ids = seq[1:n + 1] if targets.size else np.zeros([n], np.int32)
    out = {
        "input_tokens": seq[:n],
        "target_tokens": target_ids,
        "loss_weights": (np.arange(n) >= inputs.size - 1).astype(np.float32) * (targets.size > 0),
        "prefix_mask": (np.arange(n) < inputs.size).astype(np.int32),
        "segment_ids": np.ones([n], np.int32),
        "positions": np.arange(n, dtype=np.int32),
        "input_modality": vocab.modality_of(seq[:n]),
        "target_modality": (vocab.modality_of(target_ids) if targets.size
                            else np.zeros([n], np.int32)),
        "task_ids": np.full([n], task_index, np.int32),
    }
    return {k: _pad(v.astype(FEATURE_DTYPES[k]), length) for k, v in out.items()}


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros([length], x.dtype)  # 5x faster than np.pad on short rows (input pipeline)
    out[:x.shape[0]] = x
    return out


def stack_features(examples: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches per-example features (all padded to one length) along a new axis 0."""
    if not examples:
        raise ValueError("stack_features needs at least one example")
    keys = set(examples[0])
    for i, ex in enumerate(examples):
        if set(ex) != keys:
            raise ValueError(f"example {i} has features {sorted(ex)}, expected {sorted(keys)}")
    return {k: np.stack([ex[k] for ex in examples]) for k in sorted(keys)}


CONDITIONING_MODALITIES = (Modality.TEXT, Modality.TEXT_EMBEDDING, Modality.VISUAL, Modality.AUDIO)


def mismatch_conditioning(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with every example's conditioning taken from the next example's.

    Measures whether a model uses its prefix: the teacher-forced loss of the outputs given
    another example's caption / first frame / masked clip / audio, minus the loss given their
    own, is how much the conditioning tells the model (~0 when it is ignored). Rows must
    hold examples of one task at one layout, which is how evaluation batches come; rows with
    no example (segment_ids all 0) stay as they are and are skipped by the cycle. Prefix
    positions whose input modality is text, visual or audio in both rows take the other
    row's id; text embeddings ("t5" mode) move with their row. Outputs, task tokens and
    every other feature are unchanged (targets inside the prefix carry no loss).
    """
    out = {key: np.array(value) for key, value in batch.items()}
    real = np.flatnonzero(np.asarray(batch["segment_ids"]).any(axis=1))
    if len(real) < 2:
        return out
    donor = np.roll(real, -1)
    modality, prefix = np.asarray(batch["input_modality"]), np.asarray(batch["prefix_mask"]).astype(bool)
    conditioning = np.isin(modality, CONDITIONING_MODALITIES) & prefix
    swap = conditioning[real] & conditioning[donor] & (modality[real] == modality[donor])
    tokens = out["input_tokens"]
    tokens[real] = np.where(swap, np.asarray(batch["input_tokens"])[donor], tokens[real])
    if TEXT_EMBEDDINGS in out:
        out[TEXT_EMBEDDINGS][real] = np.asarray(batch[TEXT_EMBEDDINGS])[donor]
    return out
