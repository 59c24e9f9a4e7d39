"""The standalone harness: a directory of mp4 + JSON clips -> results.json and report.md."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.demo import generate_clips
from vp_jax.evaluation import degrade, evaluate_clips, results, scoring
from vp_jax.evaluation.digit_classifier import DigitClassifier, TrainingSettings, score_digit

SMALL = TrainingSettings(num_clips=300)


class _MeanColour:
    name = "mean_colour"

    def features(self, videos):
        return videos.reshape(len(videos), videos.shape[1], -1, 3).mean(2).reshape(len(videos), -1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("cache"))
    DigitClassifier.load_or_train(DigitClassifier.cache_file(directory, SMALL), SMALL)
    return directory


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, cache_dir):
    """4 generated t2v clips (3 right, 1 showing another clip), ceilings, and other tasks."""
    classifier = DigitClassifier.load(DigitClassifier.cache_file(cache_dir, SMALL))
    good = [c for c in generate_clips("test", 40, seed=1)
            if 1 not in c.truth["bounce_frames"] and score_digit(c.video, c.truth, classifier)["digit_correct"]]
    a = good[0]
    b = next(c for c in good if c.truth["digit"] != a.truth["digit"] and c.truth["direction"] != a.truth["direction"])
    directory = str(tmp_path_factory.mktemp("clips"))
    write = evaluate_clips.write_clip
    for i, clip in enumerate(good[:3]):
        write(directory, f"t2v_{i}", "t2v", "generated", clip.video, clip.truth, caption=clip.caption)
    write(directory, "t2v_wrong", "t2v", "generated", b.video, a.truth, caption=a.caption)
    for i, clip in enumerate(good[3:5]):
        write(directory, f"t2v_real_{i}", "t2v", "real", degrade.gaussian_blur(clip.video, 0.7), clip.truth,
              reference_video=clip.video)
        write(directory, f"v2a_{i}", "video_to_audio", "generated", clip.video, clip.truth, audio=clip.audio)
    write(directory, "i2v_0", "i2v", "generated", np.concatenate([a.video[:1], b.video[1:]]), a.truth,
          reference_video=a.video)
    write(directory, "recon_0", "reconstruction", "real", a.video, a.truth, audio=a.audio,
          reference_video=a.video, reference_audio=a.audio)
    with open(os.path.join(directory, "broken.json"), "w") as f:
        json.dump({"truth": {}}, f)
    with open(os.path.join(directory, "corrupt.mp4"), "wb") as f:
        f.write(b"\x00" * 100)
    with open(os.path.join(directory, "corrupt.json"), "w") as f:
        json.dump({"task": "t2v", "truth": a.truth}, f)
    return directory


def test_directory_scores_right_clips_high_wrong_clips_low_and_skips_bad_ones(clips_dir, cache_dir):
    records, problems = evaluate_clips.load_clips(clips_dir)
    assert sorted(p.split(":")[0] for p in problems) == ["broken.json", "corrupt.json"]
    assert "missing field 'task'" in " ".join(problems)
    classifier = DigitClassifier.load(DigitClassifier.cache_file(cache_dir, SMALL))
    tasks, score_problems = evaluate_clips.evaluate_records(records, classifier, _MeanColour())
    assert score_problems == []
    t2v = tasks["t2v"]
    assert (t2v["digit_correct"].value, t2v["digit_correct"].count) == (0.75, 4)
    assert t2v["direction_correct"].value == 0.75
    assert t2v["digit_correct"].ceiling == 1.0 and t2v["direction_correct"].ceiling == 1.0
    # The wrong clip shows another digit under the first good clip's truth: that digit loses one.
    by_digit = t2v["digit_correct"].by_digit
    assert sum(cell["count"] for cell in by_digit.values()) == 4 and t2v["direction_correct"].by_digit is None
    assert sorted(cell["value"] for cell in by_digit.values() if cell["count"])[0] < 1.0
    assert tasks["video_to_audio"]["pitch_class_correct"].value == 1.0
    assert tasks["video_to_audio"]["click_f1"].value == 1.0
    assert tasks["i2v"]["first_frame_psnr"].value > 30  # the real first frame through H.264
    assert tasks["reconstruction"]["psnr"].ceiling > 30 and tasks["reconstruction"]["si_snr_db"].ceiling > 30
    frechet = t2v["frechet_distance"]
    assert frechet.value > 0 and frechet.ceiling is not None and frechet.higher_is_better is False


def test_command_line_writes_results_and_report(clips_dir, cache_dir, tmp_path):
    out_dir = str(tmp_path / "eval")
    proc = subprocess.run(
        [sys.executable, "-m", "vp_jax.evaluation.evaluate_clips", f"--clips_dir={clips_dir}",
         f"--out_dir={out_dir}", f"--cache_dir={cache_dir}", "--feature_network=none",
         "--tensorboard=false", f"--classifier_clips={SMALL.num_clips}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "training" not in proc.stdout  # the cached classifier was reused
    assert "skipped broken.json" in proc.stderr
    tasks, info = results.read_results(os.path.join(out_dir, "results.json"))
    assert tasks["t2v"]["digit_correct"].value == 0.75 and info["num_clips"] == 10
    report = open(os.path.join(out_dir, "report.md")).read()
    assert "| t2v | direction_correct | 0.750 | 1.000 | >= 0.9 NOT met | 4/2 |" in report
    assert "## By true digit" in report and "| t2v | digit_correct |" in report.split("## By true digit")[1]
    assert os.path.isfile(os.path.join(out_dir, "samples.png"))


def test_continuation_scores_only_the_frames_it_generated(cache_dir):
    # Head (frames 0-8) from one clip, tail from a clip of another digit: scored over the
    # whole clip the head's frames would outvote the tail; scored on the tail, it is wrong.
    classifier = DigitClassifier.load(DigitClassifier.cache_file(cache_dir, SMALL))
    clips = [c for c in generate_clips("test", 40, seed=2) if score_digit(c.video, c.truth, classifier)["digit_correct"]]
    a = clips[0]
    b = next(c for c in clips if c.truth["digit"] != a.truth["digit"])
    spliced = np.concatenate([a.video[:9], b.video[9:]])
    whole = scoring.score_clip("continuation", spliced, a.truth, classifier=classifier)
    tail = scoring.score_clip("continuation", spliced, a.truth, classifier=classifier, given_frames=9)
    assert whole["digit_correct"] == 1.0 and tail["digit_correct"] == 0.0
    own = scoring.score_clip("continuation", a.video, a.truth, classifier=classifier, given_frames=9)
    assert own["digit_correct"] == 1.0
    with pytest.raises(ValueError, match="given_frames"):
        scoring.score_clip("continuation", a.video, a.truth, classifier=classifier, given_frames=17)


def test_score_clip_names_what_a_task_is_missing():
    video = np.zeros([17, 32, 32, 3], np.uint8)
    with pytest.raises(ValueError, match="DigitClassifier"):
        scoring.score_clip("t2v", video, {"digit": 1})
    with pytest.raises(ValueError, match="reference video"):
        scoring.score_clip("i2v", video, {"digit": 1}, classifier=object())
    with pytest.raises(ValueError, match="audio"):
        scoring.score_clip("video_to_audio", video, {"digit": 1, "bounce_frames": []})
    with pytest.raises(ValueError, match="no scores defined"):
        scoring.score_clip("dance", video, {})


def test_feature_network_choice_is_checked_and_i3d_needs_user_weights(tmp_path):
    assert evaluate_clips.make_feature_network("none", str(tmp_path)) is None
    with pytest.raises(ValueError, match="i3d_weights"):
        evaluate_clips.make_feature_network("i3d", str(tmp_path))
    with pytest.raises(ValueError, match="none, demo or i3d"):
        evaluate_clips.make_feature_network("clip", str(tmp_path))
