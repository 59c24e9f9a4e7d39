"""Motion scores: the tracked sprite's initial direction and speed match the caption."""
import numpy as np
import pytest

from data_pipelines.demo import bouncing_positions, clips as demo_clips, generate_clips, materials
from vp_jax.evaluation import degrade, motion


def _clips(n=40, seed=0):
    """Real test-split clips whose first step does not bounce (their direction is visible)."""
    clips = [c for c in generate_clips("test", n, seed) if 1 not in c.truth["bounce_frames"]]
    assert len(clips) >= n // 2
    return clips


def test_fold_reproduces_the_demos_bouncing_positions():
    positions, _ = bouncing_positions((3.0, 5.0), "left", 2.0, 30, 20.0)
    unfolded = 3.0 - 2.0 * np.arange(30)
    np.testing.assert_allclose(motion.fold(unfolded, 20.0), positions[:, 0])


def test_real_clips_score_right_direction_speed_and_path():
    for clip in _clips():
        scores = motion.score_motion(clip.video, clip.truth)
        assert scores["direction_correct"] == 1.0, clip.truth
        assert scores["speed_class_correct"] == 1.0 and scores["speed_abs_error"] < 0.1
        assert scores["trajectory_error_px"] < 0.2 and scores["sprite_found_fraction"] == 1.0


def test_a_jittery_sprite_leaving_its_wall_reads_as_moving_away_from_it():
    # Every demo sprite starts against the wall behind it. A path that moved into that wall
    # and bounced at once fits a sprite leaving it about as well, and a generated clip's
    # uneven first steps used to tip the reading that way.
    images, _, image_index = materials.digit_split("test")
    rng = np.random.default_rng(0)
    for clip in _clips(24):
        t = clip.truth
        positions = np.array(t["positions"], np.float64)
        jitter = rng.integers(-1, 2, positions.shape).astype(np.float64)
        jitter[0] = 0
        moved = np.clip(positions + jitter, 0, 32 - t["sprite_size"])
        digit_image = images[list(image_index).index(t["digit_image_index"])]
        video = demo_clips._render(demo_clips.background(t["background"], 32), digit_image, moved,
                                   t["sprite_size"])
        assert motion.score_motion(video, t)["direction_correct"] == 1.0, t


def test_a_clip_moving_another_way_or_speed_scores_wrong():
    clips = _clips()
    reference = clips[0].truth
    for clip in clips[1:]:
        scores = motion.score_motion(clip.video, reference)
        assert scores["direction_correct"] == float(clip.truth["direction"] == reference["direction"])
        same_speed = clip.truth["speed_px_per_frame"] == reference["speed_px_per_frame"]
        assert scores["speed_class_correct"] == float(same_speed)
        if not same_speed or clip.truth["direction"] != reference["direction"]:
            assert scores["trajectory_error_px"] > 1.0


def test_horizontally_mirrored_clip_reads_as_the_opposite_direction():
    clip = next(c for c in _clips() if c.truth["direction"] in ("left", "right"))
    mirrored = clip.video[:, :, ::-1]
    estimate = motion.estimate_motion(mirrored)
    assert estimate.direction == {"left": "right", "right": "left"}[clip.truth["direction"]]


@pytest.mark.parametrize("degradation", ["blur", "resize2", "noise"])
def test_direction_survives_tokenizer_like_degradation(degradation):
    rng = np.random.default_rng(0)
    damage = {"blur": lambda v: degrade.gaussian_blur(v, 1.0),
              "resize2": lambda v: degrade.resize_round_trip(v, 2),
              "noise": lambda v: degrade.add_noise(v, 10, rng)}[degradation]
    clips = _clips(30)
    scores = [motion.score_motion(damage(c.video), c.truth) for c in clips]
    assert np.mean([s["direction_correct"] for s in scores]) >= 0.95
    assert np.mean([s["speed_class_correct"] for s in scores]) >= 0.95


def test_a_clip_without_a_sprite_scores_zero_not_a_crash():
    clip = _clips(4)[0]
    dark = (clip.video // 3).astype(np.uint8)  # below the brightest possible background
    scores = motion.score_motion(dark, clip.truth)
    assert scores["direction_correct"] == 0.0 and scores["sprite_found_fraction"] == 0.0
    assert np.isnan(scores["motion_fit_error_px"])


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        motion.estimate_motion(np.zeros([5, 32, 32, 3], np.float32))
    with pytest.raises(ValueError, match="square"):
        motion.estimate_motion(np.zeros([5, 32, 40, 3], np.uint8))
    with pytest.raises(ValueError, match="direction"):
        motion.score_motion(np.zeros([5, 32, 32, 3], np.uint8), {"speed_px_per_frame": 1.0})


def test_a_sprite_that_never_moves_is_static_and_scores_wrong():
    clip = _clips(4)[0]
    frozen = np.repeat(clip.video[:1], len(clip.video), axis=0)
    assert motion.estimate_motion(frozen).direction == "static"
    scores = motion.score_motion(frozen, clip.truth)
    assert scores["direction_correct"] == 0.0 and scores["speed_class_correct"] == 0.0


def test_tail_truth_renumbers_the_path_and_reverses_direction_at_each_bounce():
    # A continuation is scored on the frames it generated: the frames after its prefix, with
    # the truth cut there, read as the direction in effect at the cut. Fast sprites bounce
    # on frame 11, so a cut at 12 gives tails that run against their caption's direction.
    checked, cut = 0, 12
    for clip in generate_clips("test", 60, seed=3):
        if {cut, cut + 1} & set(clip.truth["bounce_frames"]):
            continue  # a tail that starts against the wall: its direction is ambiguous
        tail = motion.truth_from_frame(clip.truth, cut)
        flips = sum(b <= cut for b in clip.truth["bounce_frames"])
        assert (tail["direction"] == clip.truth["direction"]) == (flips % 2 == 0)
        assert tail["positions"] == clip.truth["positions"][cut:]
        assert tail["bounce_frames"] == [b - cut for b in clip.truth["bounce_frames"] if b > cut]
        scores = motion.score_motion(clip.video[cut:], tail)
        assert scores["direction_correct"] == 1.0, clip.truth
        assert scores["trajectory_error_px"] < 0.3
        checked += flips % 2
    assert checked >= 3  # some tails run against their caption's direction
    assert motion.truth_from_frame({"direction": "left"}, 0) == {"direction": "left"}
