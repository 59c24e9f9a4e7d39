"""The Beam pipeline on DirectRunner: deterministic shards, idempotent re-runs, exact resume."""
import glob
import os

import pytest
import tensorflow as tf

from data_pipelines import beam_pipeline, clip_sources, clip_store

NUM_SHARDS = {"train": 3, "validation": 1}


def _units():
    return clip_sources.demo_units({"train": 9, "validation": 2}, seed=4)


def _records(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.tfrecord"))):
        out[os.path.basename(path)] = [bytes(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("raw"))
    result = beam_pipeline.run_pipeline(_units(), clip_store.RawClipEncoder(), directory, NUM_SHARDS,
                                        ["--runner=DirectRunner", "--direct_num_workers=1"])
    return directory, result


def test_every_clip_lands_once_in_its_hashed_shard(finished):
    directory, result = finished
    assert result.units_run == 11
    assert {s: v["num_examples"] for s, v in result.splits.items()} == {"train": 9, "validation": 2}
    for name, records in _records(directory).items():
        clips = [clip_store.decode_clip(r) for r in records]
        ids = [c.clip_id for c in clips]
        assert ids == sorted(ids)
        split, index = name.split("-")[0], int(name.split("-")[1])
        assert all(clip_sources.shard_index(i, NUM_SHARDS[split]) == index for i in ids)
    assert len(result.reports) == 11 and all(r["status"] == "ok" for r in result.reports)


def test_rerunning_a_finished_pipeline_is_a_no_op(finished):
    directory, _ = finished
    before = _records(directory)
    again = beam_pipeline.run_pipeline(_units(), clip_store.RawClipEncoder(), directory, NUM_SHARDS)
    assert again.units_run == 0
    assert _records(directory) == before


def test_a_killed_run_resumes_without_duplicating_or_dropping_clips(tmp_path, finished):
    reference, _ = finished
    directory = str(tmp_path)
    for name in os.listdir(reference):
        if name.endswith((".tfrecord", ".done.json")) or name == beam_pipeline.CONFIG_FILENAME:
            tf.io.gfile.copy(os.path.join(reference, name), os.path.join(directory, name))
    # The kill: shard 1 half-written without its marker, plus a leftover temporary file.
    shard = os.path.join(directory, beam_pipeline.shard_name("train", 1, 3))
    os.remove(shard + beam_pipeline.DONE_SUFFIX)
    with open(shard, "r+b") as f:
        f.truncate(100)
    open(shard + ".tmp-deadbeef", "wb").close()
    with pytest.raises(RuntimeError, match="no done marker"):
        beam_pipeline.collect_result(directory, NUM_SHARDS)
    resumed = beam_pipeline.run_pipeline(_units(), clip_store.RawClipEncoder(), directory, NUM_SHARDS)
    expected = sum(clip_sources.shard_index(u.key, 3) == 1 for u in _units() if u.split == "train")
    assert resumed.units_run == expected
    assert _records(directory) == _records(reference)


def test_different_settings_into_the_same_folder_are_refused(finished):
    directory, _ = finished
    with pytest.raises(ValueError, match="other settings"):
        beam_pipeline.run_pipeline(_units(), clip_store.RawClipEncoder(), directory, {"train": 2, "validation": 1})


def test_duplicate_unit_keys_are_rejected(tmp_path):
    units = _units() + _units()[:1]
    with pytest.raises(ValueError, match="same key"):
        beam_pipeline.run_pipeline(units, clip_store.RawClipEncoder(), str(tmp_path), NUM_SHARDS)
