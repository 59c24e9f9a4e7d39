"""Mixtures: AGD length groups, the image/video schedule, and rates within tolerance."""
import numpy as np
import pytest

from data_pipelines import testing
from data_pipelines.feature_converter import VideoPoetFeatureConverter
from data_pipelines.mixtures import (ImageVideoSchedule, draw_group, group_probabilities,
                                     make_length_groups, register_group_mixtures)
from data_pipelines.seqio_tasks import ShardDataset, register_seqio_tasks
from vp_jax.tasks import TASKS, Geometry, get_task, model_length
from vp_jax.vocabulary import Vocabulary

PAPER_VOCAB = Vocabulary(visual_bits=18, audio_levels=4, audio_codebook_size=1024, text_vocab_size=0)
PAPER_GEOMETRY = Geometry((5, 16, 16), (4, 106), 64)
ALL_TASKS = {t.name: 1.0 for t in TASKS}


def test_paper_geometry_trains_eleven_tasks_in_four_shapes_with_little_padding():
    groups = make_length_groups(ALL_TASKS, PAPER_GEOMETRY, PAPER_VOCAB, max_padding=0.1)
    assert [g.tasks for g in groups] == [
        ("inpainting", "outpainting", "stylization"),
        ("audio_to_video", "video_to_audio", "av_continuation"),
        ("unconditional", "t2v", "i2v", "continuation"),
        ("t2i",)]
    for g in groups:
        for name in g.tasks:
            assert g.length >= model_length(get_task(name), PAPER_GEOMETRY, PAPER_VOCAB) >= 0.9 * g.length
    assert sum(g.rate for g in groups) == pytest.approx(1.0)
    assert groups[2].rate == pytest.approx(4 / 11)


def test_image_tasks_never_share_a_group_with_video_tasks():
    rates = {"t2i": 1.0, "unconditional": 1.0}
    groups = make_length_groups(rates, PAPER_GEOMETRY, PAPER_VOCAB, max_padding=0.99)
    assert [(g.tasks, g.is_image) for g in groups] == [(("unconditional",), False), (("t2i",), True)]
    with pytest.raises(ValueError, match="mixes image and video"):
        make_length_groups(rates, PAPER_GEOMETRY, PAPER_VOCAB, spec=[["t2i", "unconditional"]])


def test_explicit_groups_must_list_every_task_once():
    rates = {"t2v": 1.0, "i2v": 3.0, "t2i": 1.0}
    groups = make_length_groups(rates, PAPER_GEOMETRY, PAPER_VOCAB, spec=[["t2v", "i2v"], ["t2i"]])
    assert groups[0].tasks == ("t2v", "i2v") and groups[0].task_rates == (0.25, 0.75)
    assert groups[0].length == max(model_length(get_task(n), PAPER_GEOMETRY, PAPER_VOCAB)
                                   for n in ("t2v", "i2v"))
    with pytest.raises(ValueError, match="exactly once"):
        make_length_groups(rates, PAPER_GEOMETRY, PAPER_VOCAB, spec=[["t2v"], ["t2i"]])


def test_group_draws_follow_the_rates():
    groups = make_length_groups({"t2v": 1.0, "inpainting": 2.0, "video_to_audio": 1.0},
                                PAPER_GEOMETRY, PAPER_VOCAB)
    draws = np.array([draw_group(groups, 7, step, None, None) for step in range(8000)])
    freq = np.bincount(draws, minlength=len(groups)) / draws.size
    np.testing.assert_allclose(freq, [g.rate for g in groups], atol=0.02)
    assert draws.tolist()[:50] == [draw_group(groups, 7, s, None, None) for s in range(50)]


def test_schedule_gives_image_tasks_90_percent_then_10_percent():
    groups = make_length_groups({"t2i": 1.0, "t2v": 1.0, "inpainting": 1.0}, PAPER_GEOMETRY, PAPER_VOCAB)
    schedule = ImageVideoSchedule(switch_fraction=0.25, image_share_before=0.9, image_share_after=0.1)
    image = np.array([g.is_image for g in groups])
    total = 16000
    early = [draw_group(groups, 0, s, total, schedule) for s in range(0, total // 4)]
    late = [draw_group(groups, 0, s, total, schedule) for s in range(total // 4, total // 2)]
    assert np.mean(image[early]) == pytest.approx(0.9, abs=0.02)
    assert np.mean(image[late]) == pytest.approx(0.1, abs=0.02)
    video_probs = group_probabilities(groups, total - 1, total, schedule)[~image]
    np.testing.assert_allclose(video_probs, [0.45, 0.45])


def test_schedule_needs_image_and_video_tasks_and_total_steps():
    only_video = make_length_groups({"t2v": 1.0}, PAPER_GEOMETRY, PAPER_VOCAB)
    with pytest.raises(ValueError, match="both image tasks"):
        group_probabilities(only_video, 0, 100, ImageVideoSchedule())
    with pytest.raises(ValueError, match="total_steps"):
        group_probabilities(only_video, 0, None, ImageVideoSchedule())
    with pytest.raises(ValueError, match="switch_fraction"):
        ImageVideoSchedule(switch_fraction=1.5)


def test_seqio_group_mixture_samples_its_tasks_at_their_rates(tmp_path):
    testing.write_synthetic_shards(str(tmp_path), num_examples=16, num_shards=1)
    dataset = ShardDataset.open(str(tmp_path))
    rates = {"inpainting": 3.0, "outpainting": 1.0}
    groups = make_length_groups(rates, dataset.geometry, dataset.vocab)
    assert len(groups) == 1
    mixture = register_group_mixtures(register_seqio_tasks(dataset, list(rates)), groups)[groups[0].name]
    converter = VideoPoetFeatureConverter(dataset.vocab)
    length = groups[0].length
    ds = mixture.get_dataset(None, split="train", shuffle=True, seed=5, num_epochs=None)
    ds = converter(ds, {"inputs": length, "targets": length, "task_index": 1}).take(600)
    task_ids = np.array([ex["task_ids"][0] for ex in ds.as_numpy_iterator()])
    share = np.mean(task_ids == get_task("inpainting").index)
    assert share == pytest.approx(0.75, abs=0.06)
