import numpy as np
import pytest

from vp_jax import features
from vp_jax.vocabulary import Modality, Vocabulary

V = Vocabulary(visual_bits=6, audio_levels=1, audio_codebook_size=2, text_vocab_size=4)


def test_worked_example_from_the_docstring():
    f = features.example_features([1, 70, 300], [11, 301, 2], task_index=4, vocab=V, length=7)
    assert f["input_tokens"].tolist() == [1, 70, 300, 11, 301, 0, 0]
    assert f["target_tokens"].tolist() == [70, 300, 11, 301, 2, 0, 0]
    assert f["loss_weights"].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert f["prefix_mask"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert f["segment_ids"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert f["positions"].tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert f["task_ids"].tolist() == [4] * 5 + [0, 0]
    assert f["input_modality"].tolist()[:5] == [Modality.SPECIAL, Modality.SPECIAL, Modality.VISUAL,
                                               Modality.SPECIAL, Modality.VISUAL]
    assert f["target_modality"].tolist()[-3:] == [Modality.SPECIAL, Modality.PAD, Modality.PAD]
    assert {k: v.dtype for k, v in f.items()} == features.FEATURE_DTYPES


def test_a_sampling_prefix_has_no_loss_and_is_all_prefix():
    f = features.example_features([1, 70, 300], [], task_index=0, vocab=V)
    assert f["input_tokens"].tolist() == [1, 70, 300]
    assert f["loss_weights"].sum() == 0 and f["prefix_mask"].tolist() == [1, 1, 1]


def test_too_long_example_names_the_length_group():
    with pytest.raises(ValueError, match="length group has 3"):
        features.example_features([1, 2, 3], [4, 5], 0, V, length=3)


def test_stack_features_batches_and_checks_keys():
    a = features.example_features([1, 2], [3], 0, V, length=4)
    batch = features.stack_features([a, a])
    assert batch["input_tokens"].shape == (2, 4)
    with pytest.raises(ValueError, match="has features"):
        features.stack_features([a, {"input_tokens": a["input_tokens"]}])


def test_mismatch_conditioning_gives_each_example_the_next_examples_prefix_only():
    text, visual = V.text_range[0], V.visual_range[0]
    rows = [features.example_features([1, 70, text + i, visual + i], [visual + 10 + i, 2], 0, V, length=6)
            for i in range(3)]
    batch = features.stack_features(rows + [{k: np.zeros_like(v) for k, v in rows[0].items()}])
    out = features.mismatch_conditioning(batch)
    # Rows 0..2 take the caption and frame of rows 1, 2, 0; the padding row is left alone.
    assert out["input_tokens"][:, 2].tolist() == [text + 1, text + 2, text + 0, 0]
    assert out["input_tokens"][:, 3].tolist() == [visual + 1, visual + 2, visual + 0, 0]
    # <bos>, task token and the outputs (inputs and targets) are each row's own.
    np.testing.assert_array_equal(out["input_tokens"][:, [0, 1, 4]], batch["input_tokens"][:, [0, 1, 4]])
    for key in batch:
        if key != "input_tokens":
            np.testing.assert_array_equal(out[key], batch[key])
    assert batch["input_tokens"][:, 2].tolist() == [text, text + 1, text + 2, 0]  # input untouched
    single = features.mismatch_conditioning(features.stack_features(rows[:1]))
    np.testing.assert_array_equal(single["input_tokens"], rows[0]["input_tokens"][None])
