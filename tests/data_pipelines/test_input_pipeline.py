"""TrainInput and eval_batches: group-shaped batches from seqio Mixtures, exact resume from
saved iterator states, disjoint processes."""
import collections
import json

import numpy as np
import pytest

from data_pipelines import testing
from data_pipelines.input_pipeline import (TrainInput, default_data_config, eval_batches,
                                           validate_data_config)
from data_pipelines.seqio_tasks import ShardDataset
from vp_jax.features import FEATURE_DTYPES
from vp_jax.tasks import get_task


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shards"))
    testing.write_synthetic_shards(directory, num_examples=48, num_shards=2, silent_every=4)
    return directory


def config(shards, **overrides):
    cfg = default_data_config()
    cfg.shards_dir = shards
    cfg.tasks = {"t2v": 1.0, "unconditional": 1.0, "t2i": 1.0, "video_to_audio": 1.0}
    cfg.shuffle_buffer_size = 64  # the tests' datasets hold 48 clips
    for key, value in overrides.items():
        cfg[key] = value  # replaces (ConfigDict.update would merge the tasks mapping)
    return cfg


def take(train_input, n):
    return [train_input.next_batch() for _ in range(n)]


def clip_ids(train_input, group_name, n):
    return [ex["clip_id"].decode() for ex in train_input.group_examples(group_name).take(n).as_numpy_iterator()]


def assert_same(a, b):
    assert [name for name, _ in a] == [name for name, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_every_batch_is_one_length_group_of_model_features(shards):
    ti = TrainInput(config(shards), global_batch_size=8, seed=0, process_index=0, process_count=1)
    lengths = {g.name: g.length for g in ti.groups}
    seen = set()
    for name, batch in take(ti, 30):
        seen.add(name)
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            k: ((8, lengths[name]), np.dtype(d)) for k, d in FEATURE_DTYPES.items()}
        group = next(g for g in ti.groups if g.name == name)
        assert set(np.unique(batch["task_ids"][:, 0])) <= {get_task(t).index for t in group.tasks}
        assert batch["loss_weights"].sum(axis=1).min() > 0
    assert seen == set(lengths)


def test_resume_sees_exactly_the_batches_of_an_uninterrupted_run(shards, tmp_path):
    cfg = config(shards, text_dropout=0.3)
    uninterrupted = take(TrainInput(cfg, 8, seed=3, process_index=0, process_count=1), 40)
    first = TrainInput(cfg, 8, seed=3, process_index=0, process_count=1)
    take(first, 25)
    first.save(str(tmp_path / "position"))
    take(first, 3)  # the saved position stays where it was
    first.close()
    resumed = TrainInput(cfg, 8, seed=3, process_index=0, process_count=1)
    resumed.restore(str(tmp_path / "position"))
    state = json.loads(json.dumps(resumed.state()))  # the JSON part the checkpoint metadata keeps
    assert state["step"] == sum(state["group_batches"].values()) == 25
    assert_same(take(resumed, 15), uninterrupted[25:])


def test_order_is_fixed_by_the_seed(shards):
    a = take(TrainInput(config(shards), 8, seed=1, process_index=0, process_count=1), 5)
    b = take(TrainInput(config(shards), 8, seed=1, process_index=0, process_count=1), 5)
    c = take(TrainInput(config(shards), 8, seed=2, process_index=0, process_count=1), 5)
    assert_same(a, b)
    assert any(x[0] != y[0] or not np.array_equal(x[1]["input_tokens"], y[1]["input_tokens"])
               for x, y in zip(a, c))


def test_a_task_walks_every_clip_with_its_fields_about_once_per_epoch(shards):
    ti = TrainInput(config(shards, tasks={"video_to_audio": 1.0}), 4, seed=0,
                    process_index=0, process_count=1)
    with_sound = {c["clip_id"].decode() for c in ShardDataset.open(shards).read("train", ["audio_tokens"])
                  .as_numpy_iterator() if c["audio_tokens"].size}
    assert len(with_sound) == 36  # 48 clips, every 4th is silent
    counts = collections.Counter(clip_ids(ti, ti.groups[0].name, 10 * 36))
    assert set(counts) == with_sound
    # Ten epochs through a 64-example shuffle buffer: each clip 10 times, give or take the
    # two epochs the buffer can reach across.
    assert 8 <= min(counts.values()) and max(counts.values()) <= 12


@pytest.mark.parametrize("num_shards", [2, 1])  # 1 file for 2 processes: every 2nd example each
def test_processes_read_disjoint_clips_and_share_one_state(tmp_path, num_shards):
    testing.write_synthetic_shards(str(tmp_path), num_examples=48, num_shards=num_shards, silent_every=4)
    cfg = config(str(tmp_path), text_dropout=0.2)
    parts = [TrainInput(cfg, 8, seed=0, process_index=i, process_count=2) for i in range(2)]
    group = next(g.name for g in parts[0].groups if "t2v" in g.tasks)
    ids = [set(clip_ids(p, group, 150)) for p in parts]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 48
    for _ in range(12):
        (name0, b0), (name1, b1) = parts[0].next_batch(), parts[1].next_batch()
        assert name0 == name1 and b0["input_tokens"].shape[0] == b1["input_tokens"].shape[0] == 4
    assert parts[0].state() == parts[1].state()


def test_a_process_without_examples_for_a_task_is_an_error_naming_it(tmp_path):
    # One file, two processes: process 1 gets examples 1, 3, 5, ..., all of them silent.
    testing.write_synthetic_shards(str(tmp_path), num_examples=8, num_shards=1, silent_every=2)
    cfg = config(str(tmp_path), tasks={"video_to_audio": 1.0})
    TrainInput(cfg, 2, seed=0, process_index=0, process_count=2).close()
    with pytest.raises(ValueError, match=r"process 1 of 2 reads every 2-th example of 1 file\(s\) and "
                                         r"finds no example with field\(s\) \['video_tokens', "
                                         r"'audio_tokens'\] for task 'video_to_audio'"):
        TrainInput(cfg, 2, seed=0, process_index=1, process_count=2)


def test_text_dropout_empties_the_caption_of_about_its_share_of_rows(shards):
    ti = TrainInput(config(shards, tasks={"t2v": 1.0}, text_dropout=0.25), 16, seed=0,
                    process_index=0, process_count=1)
    vocab = ti.vocab
    dropped = [row[3] == vocab.token("<eot_i>") for _ in range(40) for row in ti.next_batch()[1]["input_tokens"]]
    assert np.mean(dropped) == pytest.approx(0.25, abs=0.05)


def test_rows_follow_the_task_rates_inside_a_group(shards):
    ti = TrainInput(config(shards, tasks={"t2v": 3.0, "unconditional": 1.0}, length_groups="t2v, unconditional"),
                    16, seed=0, process_index=0, process_count=1)
    task_ids = np.concatenate([ti.next_batch()[1]["task_ids"][:, 0] for _ in range(60)])
    assert np.mean(task_ids == get_task("t2v").index) == pytest.approx(0.75, abs=0.04)


def test_t5_text_mode_adds_padded_text_embeddings(tmp_path):
    testing.write_synthetic_shards(str(tmp_path), num_examples=8, text_mode="t5", num_shards=1)
    cfg = config(str(tmp_path), tasks={"t2v": 1.0, "unconditional": 1.0}, length_groups="t2v, unconditional")
    ti = TrainInput(cfg, 4, seed=0, process_index=0, process_count=1)
    assert ti.text_embedding_dim == testing.TEXT_EMBEDDING_DIM
    _, batch = ti.next_batch()
    assert batch["text_embeddings"].shape == (4, 6, testing.TEXT_EMBEDDING_DIM)
    slots = (batch["input_tokens"] == ti.vocab.token("<text_emb>")).sum(axis=1)
    assert sorted(set(slots)) != [0]  # some t2v rows with their caption
    for row, n in zip(batch["text_embeddings"], slots):
        assert np.all(np.abs(row[:n]).sum(axis=1) > 0) and not row[n:].any()


def test_t5_text_mode_resumes_exactly_too(tmp_path):
    testing.write_synthetic_shards(str(tmp_path / "shards"), num_examples=16, text_mode="t5", num_shards=1)
    cfg = config(str(tmp_path / "shards"), tasks={"t2v": 1.0, "t2i": 1.0}, text_dropout=0.3)
    uninterrupted = take(TrainInput(cfg, 4, seed=7, process_index=0, process_count=1), 12)
    first = TrainInput(cfg, 4, seed=7, process_index=0, process_count=1)
    take(first, 6)
    first.save(str(tmp_path / "position"))
    resumed = TrainInput(cfg, 4, seed=7, process_index=0, process_count=1)
    resumed.restore(str(tmp_path / "position"))
    assert_same(take(resumed, 6), uninterrupted[6:])


def test_restore_refuses_a_position_from_another_seed_task_set_or_process(shards, tmp_path):
    ti = TrainInput(config(shards), 8, seed=0, process_index=0, process_count=1)
    ti.next_batch()
    ti.save(str(tmp_path))
    with pytest.raises(ValueError, match="'seed' is 0 but this input has 1"):
        TrainInput(config(shards), 8, seed=1, process_index=0, process_count=1).restore(str(tmp_path))
    with pytest.raises(ValueError, match="'process_count' is 1 but this input has 2"):
        TrainInput(config(shards), 8, seed=0, process_index=0, process_count=2).restore(str(tmp_path))
    with pytest.raises(ValueError, match="tasks, rates, length groups"):
        TrainInput(config(shards, tasks={"t2v": 1.0}), 8, seed=0, process_index=0,
                   process_count=1).restore(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no saved input state"):
        ti.restore(str(tmp_path / "nowhere"))


def test_validate_data_config_names_each_bad_field(shards):
    cfg = config(shards, text_dropout=1.5, image_video_schedule={"switch_fraction": 2.0},
                 shuffle_buffer_size=0)
    cfg.tasks = {"t2v": 1.0, "v2v": 1.0, "t2i": -1.0}
    errors = "\n".join(validate_data_config(cfg))
    assert "unknown task 'v2v'" in errors
    assert "data.tasks.t2i: rate must be a finite number > 0, got -1.0" in errors
    assert "data.text_dropout must be in [0, 1), got 1.5" in errors
    assert "data.image_video_schedule.switch_fraction must be in [0, 1], got 2.0" in errors
    assert "data.shuffle_buffer_size must be an int >= 1, got 0" in errors
    assert validate_data_config(config(shards)) == []
    with pytest.raises(ValueError, match="total_steps"):
        TrainInput(config(shards, image_video_schedule={"switch_fraction": 0.25}), 8, seed=0,
                   process_index=0, process_count=1)


def test_eval_batches_are_fixed_padded_and_split_across_processes(shards):
    cfg = config(shards, tasks={"t2v": 1.0, "video_to_audio": 1.0})
    whole = list(eval_batches(cfg, "validation", 8, max_batches_per_task=5, process_index=0, process_count=1))
    # 12 validation clips: t2v 2 batches; video_to_audio (9 clips with sound) 2 batches.
    assert [(task, group.startswith("video_len")) for task, group, _ in whole] == [
        ("t2v", True), ("t2v", True), ("video_to_audio", True), ("video_to_audio", True)]
    last = whole[1][2]
    assert last["segment_ids"][4:].sum() == 0 and last["loss_weights"][:4].sum(axis=1).min() > 0
    halves = [list(eval_batches(cfg, "validation", 8, 5, process_index=i, process_count=2)) for i in range(2)]
    for (_, _, a), (_, _, b), (_, _, full) in zip(halves[0], halves[1], whole):
        for k in full:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), full[k])
