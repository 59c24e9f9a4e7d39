"""Task features {inputs, targets, task_index[, text_embeddings]} -> the model's batch features.

The model's batch contract (names, dtypes, shifting, loss weights, prefix mask) is owned by
`vp_jax.features`; this module only applies it, in two forms that give identical arrays:

  `convert_example`            numpy, one example (what the converter maps over examples)
  `VideoPoetFeatureConverter`  a `seqio.FeatureConverter` over a tf.data pipeline (the
                               training mixtures, evaluation, the benchmark)

No packing: AGD length groups already fill each step's rows to ~0% padding, and one example
per row keeps `segment_ids` trivially 1 (0 on padding).

Lengths. A length group has L model positions shared by prefix and output, so the seqio
converter takes `task_feature_lengths={'inputs': L, 'targets': L, 'task_index': 1}` (plus
`'text_embeddings': text_length` in "t5" mode) and emits [L] features; an example needing
more than L positions is an error, never a silent truncation.

Text embeddings ("t5" text mode) come out [text_length, dim]: row j fills the j-th
`<text_emb>` slot of `input_tokens`; rows past the example's slots are zero, so a caption
dropped for classifier-free guidance (no slots) carries all-zero embeddings.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import seqio
import tensorflow as tf

from vp_jax.features import FEATURE_DTYPES, TEXT_EMBEDDINGS, example_features
from vp_jax.vocabulary import Vocabulary

MODEL_FEATURE_NAMES = tuple(FEATURE_DTYPES)
_Spec = seqio.FeatureConverter.FeatureSpec


def convert_example(inputs: np.ndarray, targets: np.ndarray, task_index: int, vocab: Vocabulary,
                    length: int, text_embeddings: np.ndarray | None = None,
                    text_length: int | None = None) -> dict[str, np.ndarray]:
    """Model features of one example, every sequence feature [length].

    Args:
      inputs, targets: int32 vocabulary ids of the prefix and the output (`build_sequence`).
      task_index: `TaskSpec.index`.
      length: the length group's model positions.
      text_embeddings: float32 [n, dim] caption embeddings ("t5" mode), or None.
      text_length: rows of the padded `text_embeddings` feature (needed with embeddings).
    """
    features = example_features(inputs, targets, task_index, vocab, length)
    if text_embeddings is not None:
        features[TEXT_EMBEDDINGS] = pad_text_embeddings(
            text_embeddings, int(np.sum(features["input_tokens"] == vocab.token("<text_emb>"))),
            text_length)
    return features


def pad_text_embeddings(text_embeddings: np.ndarray, num_slots: int,
                        text_length: int | None) -> np.ndarray:
    """[n, dim] -> [text_length, dim] float32, keeping the first `num_slots` rows."""
    emb = np.asarray(text_embeddings, np.float32)
    if emb.ndim != 2:
        raise ValueError(f"text_embeddings: expected [n, dim], got shape {emb.shape}")
    if text_length is None or emb.shape[0] > text_length:
        raise ValueError(f"text_embeddings: {emb.shape[0]} rows do not fit text_length={text_length}")
    if num_slots > emb.shape[0]:
        raise ValueError(f"inputs have {num_slots} <text_emb> slots but only {emb.shape[0]} "
                         f"text embedding rows")
    out = np.zeros([text_length, emb.shape[1]], np.float32)
    out[:num_slots] = emb[:num_slots]
    return out


class VideoPoetFeatureConverter(seqio.FeatureConverter):
    """seqio converter: task features -> `vp_jax.features` model features, unpacked.

    Input examples: inputs int32 [p], targets int32 [o], task_index int32 [] and, with
    `text_embedding_dim > 0`, text_embeddings float32 [n, dim]. Output: the features of
    `vp_jax.features.FEATURE_DTYPES`, each [L], plus text_embeddings [text_length, dim].
    """

    TASK_FEATURES = {"inputs": _Spec(tf.int32), "targets": _Spec(tf.int32),
                     "task_index": _Spec(tf.int32, rank=0)}
    MODEL_FEATURES = {name: _Spec(tf.as_dtype(dtype)) for name, dtype in FEATURE_DTYPES.items()}

    def __init__(self, vocab: Vocabulary, text_embedding_dim: int = 0):
        self.vocab = vocab
        self.text_embedding_dim = int(text_embedding_dim)
        if self.text_embedding_dim:
            self.TASK_FEATURES = {**self.TASK_FEATURES, TEXT_EMBEDDINGS: _Spec(tf.float32, rank=2)}
            self.MODEL_FEATURES = {**self.MODEL_FEATURES, TEXT_EMBEDDINGS: _Spec(tf.float32, rank=2)}
        super().__init__(pack=False)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        length = int(task_feature_lengths["targets"])
        if int(task_feature_lengths["inputs"]) != length:
            raise ValueError(
                f"task_feature_lengths: 'inputs' ({task_feature_lengths['inputs']}) and "
                f"'targets' ({length}) must both be the length group's model length")
        lengths = {name: length for name in FEATURE_DTYPES}
        if self.text_embedding_dim:
            lengths[TEXT_EMBEDDINGS] = int(task_feature_lengths[TEXT_EMBEDDINGS])
        return lengths

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
                          ) -> tf.data.Dataset:
        lengths = self.get_model_feature_lengths(task_feature_lengths)
        length, text_length = lengths["input_tokens"], lengths.get(TEXT_EMBEDDINGS)
        vocab, with_text, dim = self.vocab, bool(self.text_embedding_dim), self.text_embedding_dim
        tout = [tf.as_dtype(FEATURE_DTYPES[n]) for n in MODEL_FEATURE_NAMES]
        tout += [tf.float32] if with_text else []
        names = MODEL_FEATURE_NAMES + ((TEXT_EMBEDDINGS,) if with_text else ())

        def convert(inputs, targets, task_index, *text_embeddings):
            feats = convert_example(inputs, targets, int(task_index), vocab, length,
                                    text_embeddings[0] if with_text else None, text_length)
            return tuple(feats[n] for n in names)

        def map_fn(ex):
            args = [ex["inputs"], ex["targets"], ex["task_index"]]
            args += [ex[TEXT_EMBEDDINGS]] if with_text else []
            values = tf.numpy_function(convert, args, tout, stateful=False)
            out = dict(zip(names, values))
            for name in MODEL_FEATURE_NAMES:
                out[name].set_shape([length])
            if with_text:
                out[TEXT_EMBEDDINGS].set_shape([text_length, dim])
            return out

        return ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
