"""Digit scores: a classifier trained on real digit images reads the sprite of a clip."""
import dataclasses
import os
import shutil

import numpy as np
import pytest
from sklearn.svm import SVC

from data_pipelines.demo import generate_clips
from vp_jax.evaluation import degrade, digit_classifier
from vp_jax.evaluation.digit_classifier import DigitClassifier, TrainingSettings, score_digit

SMALL = TrainingSettings(num_clips=300, frames_per_clip=6)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("digits") / "digit_classifier.npz")
    DigitClassifier.load_or_train(path, SMALL)
    return path


@pytest.fixture(scope="module")
def test_clips():
    # Every test-split handwriting, not the demo's few per digit: the reader is what is tested.
    return list(generate_clips("test", 60, seed=0, handwritings_per_digit=0))


def test_real_test_split_clips_are_read_as_their_digit(classifier_path, test_clips):
    classifier = DigitClassifier.load(classifier_path)
    scores = [score_digit(c.video, c.truth, classifier) for c in test_clips]
    assert np.mean([s["digit_correct"] for s in scores]) >= 0.9
    assert classifier.info["validation_crop_accuracy"] >= 0.8  # crops degraded like its training


def test_a_clip_of_another_digit_scores_wrong(classifier_path, test_clips):
    classifier = DigitClassifier.load(classifier_path)
    wrong = [score_digit(c.video, dict(c.truth, digit=(c.truth["digit"] + 1) % 10), classifier)
             for c in test_clips]
    assert np.mean([s["digit_correct"] for s in wrong]) <= 0.1
    assert np.mean([s["digit_frame_share"] for s in wrong]) <= 0.15


def test_digit_survives_blur_and_a_2x_resolution_round_trip(classifier_path, test_clips):
    classifier = DigitClassifier.load(classifier_path)
    for damage in (lambda v: degrade.gaussian_blur(v, 1.0), lambda v: degrade.resize_round_trip(v, 2)):
        scores = [score_digit(damage(c.video), c.truth, classifier) for c in test_clips]
        assert np.mean([s["digit_correct"] for s in scores]) >= 0.8


def test_numpy_votes_reproduce_scikit_learn_svc_predictions():
    crops, labels = digit_classifier.training_crops("train", TrainingSettings(num_clips=80, frames_per_clip=3))
    svc = SVC(C=10.0, gamma="scale").fit(crops.reshape(len(crops), -1), labels)
    ours = DigitClassifier({"support_vectors": svc.support_vectors_, "dual_coef": svc.dual_coef_,
                            "intercept": svc.intercept_, "n_support": svc.n_support_,
                            "gamma": np.array(svc._gamma)}, {})
    probe, _ = digit_classifier.training_crops("validation", TrainingSettings(num_clips=30, frames_per_clip=3, seed=4))
    np.testing.assert_array_equal(ours.predict(probe), svc.predict(probe.reshape(len(probe), -1)))


def test_cache_is_reused_and_retrained_when_settings_change_or_file_is_corrupt(classifier_path, tmp_path, capsys):
    cached = DigitClassifier.load_or_train(classifier_path, SMALL)
    assert "training" not in capsys.readouterr().out
    np.testing.assert_array_equal(cached.support_vectors, DigitClassifier.load(classifier_path).support_vectors)

    other = str(tmp_path / "c.npz")
    cached.save(other)
    tiny = dataclasses.replace(SMALL, num_clips=120, frames_per_clip=2)
    retrained = DigitClassifier.load_or_train(other, tiny)
    assert "other settings" in capsys.readouterr().out
    assert retrained.info["settings"]["num_clips"] == 120

    with open(other, "wb") as f:
        f.write(b"not an npz")
    with pytest.raises(ValueError, match="corrupt"):
        DigitClassifier.load(other)
    DigitClassifier.load_or_train(other, tiny)
    assert "corrupt" in capsys.readouterr().out


def test_each_training_clip_count_keeps_its_own_cache_file(classifier_path, tmp_path, capsys):
    # The main job's harness and the standalone commands train with different clip counts;
    # sharing one cache directory, neither may replace the other's classifier.
    job = DigitClassifier.cache_file(str(tmp_path), SMALL)
    tiny = dataclasses.replace(SMALL, num_clips=120, frames_per_clip=2)
    standalone = DigitClassifier.cache_file(str(tmp_path), tiny)
    assert job != standalone and {os.path.dirname(job), os.path.dirname(standalone)} == {str(tmp_path)}
    shutil.copy(classifier_path, job)
    DigitClassifier.load_or_train(standalone, tiny)
    capsys.readouterr()
    reused = DigitClassifier.load_or_train(job, SMALL)
    assert "training" not in capsys.readouterr().out
    assert reused.info["settings"]["num_clips"] == SMALL.num_clips


def test_a_frame_without_a_sprite_scores_zero_and_bad_crops_are_rejected(classifier_path, test_clips):
    classifier = DigitClassifier.load(classifier_path)
    dark = (test_clips[0].video // 3).astype(np.uint8)
    assert score_digit(dark, test_clips[0].truth, classifier) == {"digit_correct": 0.0, "digit_frame_share": 0.0}
    with pytest.raises(ValueError, match=r"\[N, 8, 8\]"):
        classifier.votes(np.zeros([3, 12, 12]))
    with pytest.raises(ValueError, match="digit"):
        score_digit(test_clips[0].video, {"direction": "left"}, classifier)
