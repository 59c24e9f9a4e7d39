"""Audio scores: the tone's pitch names the digit, clicks land on bounce frames."""
import numpy as np
import pytest

from data_pipelines.demo import demo_clip
from data_pipelines.demo.sound import demo_audio
from vp_jax import media
from vp_jax.evaluation import audio_scores, degrade

FPS, RATE, SAMPLES = 8, 16000, 34000


def _audio(digit, bounces, seed=0):
    return demo_audio(digit, bounces, FPS, SAMPLES, RATE, np.random.default_rng(seed))


@pytest.mark.parametrize("digit", range(10))
def test_every_digit_tone_is_read_as_its_digit(digit):
    scores = audio_scores.score_audio(_audio(digit, [3, 11]), RATE, {"digit": digit, "bounce_frames": [3, 11]}, FPS)
    assert scores["pitch_class_correct"] == 1.0
    assert scores["pitch_cents_error"] < 5
    assert scores["click_f1"] == 1.0 and scores["click_timing_error_ms"] < 10


def test_real_demo_clip_scores_right_and_another_digits_sound_scores_wrong():
    clip = demo_clip("validation", 3, seed=0)
    truth = clip.truth
    right = audio_scores.score_audio(clip.audio, RATE, truth, FPS)
    assert right["pitch_class_correct"] == 1.0 and right["click_f1"] == 1.0
    other_digit = (truth["digit"] + 3) % 10
    wrong = audio_scores.score_audio(_audio(other_digit, [b + 4 for b in truth["bounce_frames"]] or [5]),
                                     RATE, truth, FPS)
    assert wrong["pitch_class_correct"] == 0.0
    assert wrong["click_f1"] == 0.0


def test_missing_and_extra_clicks_lower_recall_and_precision():
    truth = {"digit": 4, "bounce_frames": [2, 8, 14]}
    missing = audio_scores.score_audio(_audio(4, [2]), RATE, truth, FPS)
    assert missing["click_precision"] == 1.0 and missing["click_recall"] == pytest.approx(1 / 3)
    extra = audio_scores.score_audio(_audio(4, [2, 5, 8, 11, 14]), RATE, truth, FPS)
    assert extra["click_recall"] == 1.0 and extra["click_precision"] == pytest.approx(3 / 5)


def test_a_pure_tone_or_silence_has_no_clicks():
    assert len(audio_scores.detect_clicks(_audio(7, []), RATE)) == 0
    assert len(audio_scores.detect_clicks(np.zeros(SAMPLES, np.float32), RATE)) == 0
    scores = audio_scores.score_audio(_audio(7, []), RATE, {"digit": 7, "bounce_frames": []}, FPS)
    assert scores["click_f1"] == 1.0


def test_scores_survive_codec_like_damage_noise_lowpass_and_detuning():
    rng = np.random.default_rng(1)
    digit, bounces = 5, [4, 12]
    t = np.arange(SAMPLES) / RATE
    detuned = 0.3 * np.sin(2 * np.pi * audio_scores.DIGIT_PITCHES_HZ[digit] * 2 ** (40 / 1200) * t)
    clicks = _audio(digit, bounces) - _audio(digit, [])  # the click track alone
    damaged = detuned + 0.6 * clicks
    spectrum = np.fft.rfft(damaged)
    spectrum[np.fft.rfftfreq(SAMPLES, 1 / RATE) > 5000] = 0  # a codec that drops the top band
    damaged = np.fft.irfft(spectrum, SAMPLES) + rng.normal(0, 0.01, SAMPLES)
    scores = audio_scores.score_audio(damaged, RATE, {"digit": digit, "bounce_frames": bounces}, FPS)
    assert scores["pitch_class_correct"] == 1.0
    assert 30 < scores["pitch_cents_error"] < 50
    assert scores["click_f1"] == 1.0


def test_aac_in_mp4_round_trip_keeps_pitch_and_clicks(tmp_path):
    clip = demo_clip("test", 5, seed=0)
    path = str(tmp_path / "clip.mp4")
    media.write_mp4(path, clip.video, FPS, clip.audio, RATE)
    decoded = media.read_audio(path, RATE)
    scores = audio_scores.score_audio(decoded, RATE, clip.truth, FPS)
    assert scores["pitch_class_correct"] == 1.0 and scores["click_f1"] == 1.0


def test_bad_audio_and_truth_get_clear_errors():
    with pytest.raises(ValueError, match="mono"):
        audio_scores.estimate_pitch_hz(np.zeros([2, 100]), RATE)
    with pytest.raises(ValueError, match="NaN"):
        audio_scores.detect_clicks(np.full(1000, np.nan), RATE)
    with pytest.raises(ValueError, match="bounce_frames"):
        audio_scores.score_audio(_audio(1, []), RATE, {"digit": 1}, FPS)
    with pytest.raises(ValueError, match="sample_rate"):
        audio_scores.estimate_pitch_hz(np.zeros(1000), 1000)


def test_clicks_are_found_under_white_noise_at_10_db_snr():
    rng = np.random.default_rng(2)
    truth = {"digit": 2, "bounce_frames": [3, 9, 15]}
    clean = _audio(2, truth["bounce_frames"])
    noisy = clean + rng.normal(0, clean.std() / np.sqrt(10), clean.shape)
    scores = audio_scores.score_audio(noisy, RATE, truth, FPS)
    assert scores["pitch_class_correct"] == 1.0 and scores["click_f1"] == 1.0


def test_codec_padding_after_the_clip_is_not_a_click():
    clip = demo_clip("test", 1, seed=0)
    padded = np.concatenate([clip.audio, np.zeros(816, np.float32)])  # AAC pads to 1024-sample frames
    assert audio_scores.score_audio(padded, RATE, clip.truth, FPS)["click_precision"] == 1.0


@pytest.mark.parametrize("gain", [1.0, 0.3, 0.07, 0.01])
def test_click_detection_does_not_depend_on_the_tracks_level(gain):
    # A codec that returns the track too quiet (an undertrained SoundStream: ~0.07x) keeps its
    # clicks; the same track without clicks, or with them late, still scores 0 at that level.
    truth = {"digit": 6, "bounce_frames": [4, 13]}
    track = _audio(6, truth["bounce_frames"])
    assert audio_scores.score_audio(gain * track, RATE, truth, FPS)["click_f1"] == 1.0
    assert audio_scores.score_audio(gain * _audio(6, []), RATE, truth, FPS)["click_f1"] == 0.0
    late = degrade.shift_clicks(gain * track, RATE, 3 / FPS)
    assert audio_scores.score_audio(late, RATE, truth, FPS)["click_f1"] == 0.0


def test_codec_smoothed_clicks_are_found_and_wrong_codec_tracks_score_zero():
    rng = np.random.default_rng(3)
    f1 = {"smoothed": [], "smoothed_quiet": [], "removed": [], "late": []}
    for seed, bounces in enumerate([[3], [5, 14], [2, 9, 15], [11]]):
        truth = {"digit": seed, "bounce_frames": bounces}
        track = _audio(seed, bounces, seed=seed)
        for name, damaged in (("smoothed", degrade.codec_smoothed_clicks(track, RATE, rng)),
                              ("smoothed_quiet", degrade.codec_smoothed_clicks(track, RATE, rng, gain=0.07)),
                              ("removed", degrade.remove_clicks(track, RATE)),
                              ("late", degrade.shift_clicks(degrade.codec_smoothed_clicks(track, RATE, rng),
                                                            RATE, 3 / FPS))):
            f1[name].append(audio_scores.score_audio(damaged, RATE, truth, FPS)["click_f1"])
    assert f1["smoothed"] == [1.0] * 4 and f1["smoothed_quiet"] == [1.0] * 4
    assert f1["removed"] == [0.0] * 4 and f1["late"] == [0.0] * 4
