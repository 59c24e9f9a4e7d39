import json

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import schema


def test_example_round_trips_through_a_real_tfrecord_file(tmp_path):
    rng = np.random.default_rng(0)
    example = {
        "clip_id": "clip-7", "caption": "the digit three moves left",
        "text_tokens": rng.integers(0, 50, [5]), "video_tokens": rng.integers(0, 1024, [5, 4, 4]),
        "audio_tokens": rng.integers(0, 256, [4, 53]),
        "text_embeddings": rng.normal(size=[5, 8]).astype(np.float32),
        "metadata_json": json.dumps({"truth": {"digit": 3}}),
    }
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(schema.encode_example(example))
    fields = tuple(example)
    ds = tf.data.TFRecordDataset(path).map(lambda s: schema.parse_example(s, fields))
    got = next(iter(ds.as_numpy_iterator()))
    assert got["clip_id"] == b"clip-7"
    for name in ("text_tokens", "video_tokens", "audio_tokens"):
        np.testing.assert_array_equal(got[name], example[name])
        assert got[name].dtype == np.int32
    np.testing.assert_allclose(got["text_embeddings"], example["text_embeddings"])
    assert json.loads(got["metadata_json"])["truth"]["digit"] == 3


def test_bad_examples_name_the_field():
    with pytest.raises(ValueError, match="'video_tokens' must have rank 3"):
        schema.encode_example({"clip_id": "a", "video_tokens": np.zeros([4, 4], np.int32)}, "clip a")
    with pytest.raises(ValueError, match="unknown field"):
        schema.encode_example({"clip_id": "a", "pixels": np.zeros([1])})
    with pytest.raises(ValueError, match="negative ids"):
        schema.encode_example({"clip_id": "a", "text_tokens": np.array([-1])})
    with pytest.raises(ValueError, match="missing required field 'clip_id'"):
        schema.encode_example({"caption": "x"})


def test_spec_round_trip_and_version_check(tmp_path):
    spec = schema.ShardSpec(vocabulary={"visual_bits": 2}, tokenizers={}, geometry={},
                            splits={"train": {"files": ["a.tfrecord"], "num_examples": 1}},
                            fields=["clip_id"])
    spec.write(str(tmp_path))
    assert schema.ShardSpec.read(str(tmp_path)) == spec
    with pytest.raises(FileNotFoundError, match="missing shard"):
        spec.split_files(str(tmp_path), "train")
    with pytest.raises(ValueError, match="no split 'test'"):
        spec.split_files(str(tmp_path), "test")
    d = json.loads((tmp_path / "spec.json").read_text())
    d["schema_version"] = 99
    (tmp_path / "spec.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="schema_version"):
        schema.ShardSpec.read(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pre-tokenized"):
        schema.ShardSpec.read(str(tmp_path / "nowhere"))
