"""results.json schema round trip, aggregation with ceilings and targets, report and TensorBoard."""
import json
import math
import os

import numpy as np
import pytest

from vp_jax.evaluation import results


def _tasks():
    generated = {"t2v": [{"digit_correct": 1.0, "direction_correct": 1.0, "motion_fit_error_px": math.nan},
                         {"digit_correct": 0.0, "direction_correct": 1.0, "motion_fit_error_px": 0.5}],
                 "video_to_audio": [{"pitch_class_correct": 1.0}]}
    ceiling = {"t2v": [{"digit_correct": 1.0, "direction_correct": 1.0, "motion_fit_error_px": 0.1}],
               "reconstruction": [{"psnr": 30.0}, {"psnr": 32.0}]}
    return results.aggregate(generated, ceiling)


def test_aggregate_means_finite_values_and_puts_the_ceiling_beside_each():
    tasks = _tasks()
    digit = tasks["t2v"]["digit_correct"]
    assert (digit.value, digit.ceiling, digit.count, digit.ceiling_count) == (0.5, 1.0, 2, 1)
    assert digit.target == 0.8 and digit.meets_target() is False
    assert tasks["t2v"]["direction_correct"].meets_target() is True
    fit = tasks["t2v"]["motion_fit_error_px"]
    assert (fit.value, fit.count, fit.higher_is_better) == (0.5, 1, False)
    assert tasks["video_to_audio"]["pitch_class_correct"].ceiling is None
    recon = tasks["reconstruction"]["psnr"]
    assert recon.value is None and recon.ceiling == 31.0


def test_results_json_round_trips_and_is_strict_json(tmp_path):
    path = str(tmp_path / "eval" / "results.json")
    tasks = _tasks()
    results.write_results(path, tasks, {"step": 7})
    with open(path) as f:
        raw = json.load(f)
    assert raw["schema_version"] == results.SCHEMA_VERSION
    assert raw["tasks"]["t2v"]["digit_correct"] == {"value": 0.5, "ceiling": 1.0, "count": 2, "ceiling_count": 1,
                                                    "target": 0.8, "higher_is_better": True,
                                                    "examples": None, "by_digit": None}
    loaded, info = results.read_results(path)
    assert loaded == tasks and info == {"step": 7}


def test_digit_scores_break_down_by_true_digit_in_json_and_report(tmp_path):
    # Three generated video-to-audio clips of 1 (one right) and one of 7 (right); real clips of
    # both digits all right. Where the score is lost (the ones) is what the breakdown shows.
    generated = {"video_to_audio": [{"pitch_class_correct": v, "click_f1": 0.5} for v in (0.0, 1.0, 0.0, 1.0)]}
    ceiling = {"video_to_audio": [{"pitch_class_correct": 1.0, "click_f1": 1.0}] * 2}
    digits = {"generated": {"video_to_audio": [1, 1, 1, 7]}, "real": {"video_to_audio": [1, 7]}}
    tasks = results.aggregate(generated, ceiling, digits)
    pitch = tasks["video_to_audio"]["pitch_class_correct"]
    assert pitch.value == 0.5 and tasks["video_to_audio"]["click_f1"].by_digit is None
    assert pitch.by_digit == {"1": {"value": 1 / 3, "ceiling": 1.0, "count": 3, "ceiling_count": 1},
                              "7": {"value": 1.0, "ceiling": 1.0, "count": 1, "ceiling_count": 1}}
    path = str(tmp_path / "results.json")
    results.write_results(path, tasks)
    assert results.read_results(path)[0] == tasks
    report = results.markdown_report(tasks)
    assert "| task | metric | 1 | 7 |" in report
    assert "| video_to_audio | pitch_class_correct | 1/3 (1/1) | 1/1 (1/1) |" in report
    assert "By true digit" not in results.markdown_report(_tasks())  # no digits given, no table
    with pytest.raises(ValueError, match=r"tasks\.video_to_audio\.pitch_class_correct\.by_digit"):
        results.results_from_json({"schema_version": 1, "tasks": {"video_to_audio": {
            "pitch_class_correct": {"value": 0.5, "by_digit": {"1": {"value": 0.5}}}}}})


def test_bad_results_files_name_the_offending_field(tmp_path):
    with pytest.raises(ValueError, match="schema_version"):
        results.results_from_json({"schema_version": 99, "tasks": {}})
    with pytest.raises(ValueError, match=r"tasks\.t2v\.digit_correct\.value"):
        results.results_from_json({"schema_version": 1, "tasks": {"t2v": {"digit_correct": {"value": "high"}}}})
    with pytest.raises(ValueError, match=r"tasks\.t2v\.digit_correct"):
        results.results_from_json({"schema_version": 1, "tasks": {"t2v": {"digit_correct": {"valu": 1}}}})
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        results.read_results(str(bad))


def test_report_has_a_table_row_per_metric_and_a_contact_sheet(tmp_path):
    videos = np.random.default_rng(0).integers(0, 255, size=(2, 5, 16, 16, 3), dtype=np.uint8)
    path = results.write_report(str(tmp_path), _tasks(), videos, ["a", "b"], info={"step": 3})
    text = open(path).read()
    assert "| t2v | digit_correct | 0.500 | 1.000 | >= 0.8 NOT met | 2/1 |" in text
    assert "| reconstruction | psnr | - | 31.000 | - | 0/2 |" in text
    assert "![contact sheet](samples.png)" in text and os.path.isfile(tmp_path / "samples.png")


def _teacher_forced(tasks):
    """Adds teacher-forced rows as generation_eval.teacher_forced_entries makes them."""
    tasks["t2v"]["loss"] = results.MetricEntry(3.4419, count=1632, examples=8, higher_is_better=False)
    tasks["t2v"]["accuracy"] = results.MetricEntry(0.1672, count=1632, examples=8)
    tasks["t2i"] = {"loss": results.MetricEntry(3.858, count=96, examples=8, higher_is_better=False)}
    return tasks


def test_teacher_forced_rows_show_their_token_and_example_counts(tmp_path):
    tasks = _teacher_forced(_tasks())
    text = open(results.write_report(str(tmp_path), tasks)).read()
    assert "| t2v | loss | 3.442 | - | - | 1632 tokens / 8 examples |" in text
    assert "| t2v | accuracy | 0.167 | - | - | 1632 tokens / 8 examples |" in text
    assert "| t2i | loss | 3.858 | - | - | 96 tokens / 8 examples |" in text
    assert "| t2v | digit_correct | 0.500 | 1.000 | >= 0.8 NOT met | 2/1 |" in text  # clip rows unchanged
    path = str(tmp_path / "results.json")
    results.write_results(path, tasks)
    assert json.load(open(path))["tasks"]["t2v"]["loss"]["count"] == 1632
    loaded, _ = results.read_results(path)
    assert loaded == tasks and loaded["t2i"]["loss"].examples == 8
    with pytest.raises(ValueError, match=r"tasks\.t2v\.loss\.examples"):
        results.results_from_json({"schema_version": 1, "tasks": {"t2v": {"loss": {"value": 1.0, "examples": -2}}}})


def test_tensorboard_gets_value_and_ceiling_scalars(tmp_path):
    import tensorflow as tf

    logdir = str(tmp_path / "tb")
    sheet = np.zeros([20, 30, 3], np.uint8)
    results.write_tensorboard(logdir, 5, _tasks(), sheet)
    tags = set()
    for file in os.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, file)):
            tags |= {v.tag for v in event.summary.value}
    assert {"eval/t2v/digit_correct", "eval_ceiling/t2v/digit_correct", "eval_ceiling/reconstruction/psnr",
            "eval/samples"} <= tags
