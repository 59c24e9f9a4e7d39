"""The feature converter: task features -> vp_jax.features model features, numpy == seqio."""
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import testing
from data_pipelines.feature_converter import VideoPoetFeatureConverter, convert_example
from data_pipelines.seqio_tasks import ShardDataset, register_seqio_tasks
from vp_jax.features import FEATURE_DTYPES
from vp_jax.vocabulary import Modality

VOCAB = testing.DEFAULT_VOCAB


def test_worked_example_of_the_features_contract():
    f = convert_example([1, 70, 300 - 40], [11, 301 - 40, 2], task_index=6, vocab=VOCAB, length=7)
    assert f["input_tokens"].tolist() == [1, 70, 260, 11, 261, 0, 0]
    assert f["target_tokens"].tolist() == [70, 260, 11, 261, 2, 0, 0]
    assert f["loss_weights"].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert f["prefix_mask"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert f["segment_ids"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert f["input_modality"][2] == Modality.VISUAL and f["target_modality"][4] == Modality.SPECIAL
    assert f["task_ids"].tolist() == [6] * 5 + [0, 0]
    assert {k: v.dtype for k, v in f.items()} == {k: np.dtype(v) for k, v in FEATURE_DTYPES.items()}


def test_example_longer_than_its_length_group_is_an_error_not_a_truncation():
    with pytest.raises(ValueError, match="needs 5 positions but the length group has 4"):
        convert_example([1, 70, 260], [11, 261, 2], task_index=0, vocab=VOCAB, length=4)


def test_text_embedding_rows_past_the_slots_are_zero():
    slot = VOCAB.token("<text_emb>")
    emb = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    kept = convert_example([1, 65, 3, slot, slot, slot, 4], [11, 260, 2], 1, VOCAB, 12, emb, 6)
    dropped = convert_example([1, 65, 3, 4], [11, 260, 2], 1, VOCAB, 12, emb, 6)
    assert kept["text_embeddings"].shape == (6, 4)
    assert np.array_equal(kept["text_embeddings"][:3], emb) and not kept["text_embeddings"][3:].any()
    assert not dropped["text_embeddings"].any()
    assert kept["input_modality"][3] == Modality.TEXT_EMBEDDING


@pytest.mark.parametrize("text_mode", ["tokens", "t5"])
def test_seqio_converter_gives_the_same_arrays_as_convert_example(tmp_path, text_mode):
    testing.write_synthetic_shards(str(tmp_path), num_examples=4, text_mode=text_mode, num_shards=1)
    dataset = ShardDataset.open(str(tmp_path))
    task = register_seqio_tasks(dataset, ["stylization"])["stylization"]
    length, text_length = 40, dataset.geometry.text_length
    lengths = {"inputs": length, "targets": length, "task_index": 1}
    if text_mode == "t5":
        lengths["text_embeddings"] = text_length
    raw = task.get_dataset(None, split="validation", shuffle=False, seed=0)
    converter = VideoPoetFeatureConverter(dataset.vocab, dataset.text_embedding_dim)
    converted = list(converter(raw, lengths).as_numpy_iterator())
    examples = list(raw.as_numpy_iterator())
    assert len(converted) == len(examples) == 4
    for ex, got in zip(examples, converted):
        want = convert_example(ex["inputs"], ex["targets"], int(ex["task_index"]), dataset.vocab,
                               length, ex.get("text_embeddings"), text_length)
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
        assert got["loss_weights"].sum() == len(ex["targets"])


def test_seqio_converter_needs_one_shared_length_for_inputs_and_targets():
    converter = VideoPoetFeatureConverter(VOCAB)
    ds = tf.data.Dataset.from_tensors({"inputs": tf.constant([1, 64]), "targets": tf.constant([11, 2]),
                                       "task_index": tf.constant(0)})
    with pytest.raises(ValueError, match="must both be the length group's model length"):
        converter(ds, {"inputs": 4, "targets": 6, "task_index": 1})
