"""How robust is each evaluation scorer to tokenizer-like damage? Prints a table.

    python bench/eval_scorer_robustness.py [--num_clips=200] [--cache_dir=/tmp/vp_eval_cache]

Scores real test-split demo clips (unseen digit images) clean and after each degradation
of `vp_jax.evaluation.degrade` (blur, 32 -> 32/f -> 32 resolution round trips, noise) and
the audio after noise, a low-pass, an AAC round trip, a codec's level error and
codec-smoothed clicks (`degrade.codec_smoothed_clicks`). The clean row is the scorers'
own ceiling; a real tokenizer's reconstructions should be read against the damage whose
PSNR is closest to the tokenizer's reconstruction PSNR (printed beside each row). The
WRONG audio rows (clicks removed, clicks a few frames late) must score low: 'clickF1*' is
over clips with at least one bounce (a clip without bounces and without clicks scores 1).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from data_pipelines.demo import generate_clips
from vp_jax import media
from vp_jax.evaluation import audio_scores, degrade, faithfulness, motion
from vp_jax.evaluation.digit_classifier import DigitClassifier, score_digit


def _lowpass(audio, rate, cutoff):
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / rate) > cutoff] = 0
    return np.fft.irfft(spectrum, len(audio)).astype(np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_clips", type=int, default=200)
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "vp_eval_cache"))
    args = parser.parse_args()
    classifier = DigitClassifier.load_or_train(DigitClassifier.cache_file(args.cache_dir))
    clips = list(generate_clips("test", args.num_clips, seed=0))
    visible = [1 not in c.truth["bounce_frames"] for c in clips]
    print(f"{args.num_clips} test clips; {100 * (1 - np.mean(visible)):.1f}% bounce on frame 1 (their "
          f"caption direction is not visible; direction accuracy is also shown without them)")
    rng = np.random.default_rng(0)
    video_damage = {
        "clean": lambda v: v,
        "blur 0.7": lambda v: degrade.gaussian_blur(v, 0.7),
        "blur 1.0": lambda v: degrade.gaussian_blur(v, 1.0),
        "blur 1.5": lambda v: degrade.gaussian_blur(v, 1.5),
        "resize 32-16-32": lambda v: degrade.resize_round_trip(v, 2),
        "resize 32-8-32": lambda v: degrade.resize_round_trip(v, 4),
        "noise 10": lambda v: degrade.add_noise(v, 10, rng),
        "noise 20": lambda v: degrade.add_noise(v, 20, rng),
        "blur 1.0 + noise 8": lambda v: degrade.add_noise(degrade.gaussian_blur(v, 1.0), 8, rng),
    }
    print(f"\n{'video damage':<20} {'PSNR':>6} {'digit':>6} {'dir':>6} {'dir*':>6} {'speed':>6} {'path px':>8}")
    for name, damage in video_damage.items():
        start = time.time()
        rows = []
        for clip in clips:
            damaged = damage(clip.video)
            rows.append({**score_digit(damaged, clip.truth, classifier), **motion.score_motion(damaged, clip.truth),
                         "psnr": faithfulness.region_errors(damaged, clip.video)[0]})
        mean = lambda k, sel=None: np.nanmean([r[k] for r, v in zip(rows, visible) if sel is None or v])
        print(f"{name:<20} {mean('psnr'):6.1f} {mean('digit_correct'):6.3f} {mean('direction_correct'):6.3f} "
              f"{mean('direction_correct', True):6.3f} {mean('speed_class_correct'):6.3f} "
              f"{mean('trajectory_error_px'):8.3f}   ({time.time() - start:.1f}s)")

    rate, fps = 16000, 8.0
    audio_damage = {
        "clean": lambda a: a,
        "noise SNR 20 dB": lambda a: a + rng.normal(0, np.std(a) / 10, len(a)).astype(np.float32),
        "noise SNR 10 dB": lambda a: a + rng.normal(0, np.std(a) / np.sqrt(10), len(a)).astype(np.float32),
        "low-pass 4 kHz": lambda a: _lowpass(a, rate, 4000),
        "low-pass 2.5 kHz": lambda a: _lowpass(a, rate, 2500),
        # An undertrained SoundStream (demo config, 300 steps) returns the track ~14x too quiet.
        "gain 0.07": lambda a: 0.07 * a,
        "codec-smoothed click": lambda a: degrade.codec_smoothed_clicks(a, rate, rng),
        "codec click, gain .07": lambda a: degrade.codec_smoothed_clicks(a, rate, rng, gain=0.07),
        "WRONG: no clicks": lambda a: degrade.remove_clicks(a, rate),
        "WRONG: no clicks .07": lambda a: 0.07 * degrade.remove_clicks(a, rate),
        "WRONG: clicks +3 fr": lambda a: degrade.shift_clicks(a, rate, 3 / fps),
        "WRONG: codec +3 fr": lambda a: degrade.shift_clicks(degrade.codec_smoothed_clicks(a, rate, rng), rate,
                                                             3 / fps),
    }
    bounced = [bool(c.truth["bounce_frames"]) for c in clips]
    with tempfile.TemporaryDirectory() as tmp:
        def aac(a):
            path = os.path.join(tmp, "a.mp4")
            media.write_mp4(path, np.zeros([17, 16, 16, 3], np.uint8), fps, np.clip(a, -1, 1), rate)
            return media.read_audio(path, rate)
        audio_damage["AAC in mp4"] = aac
        print(f"\n{'audio damage':<22} {'pitch':>6} {'cents':>6} {'clickF1':>8} {'clickF1*':>8} {'ms':>6}")
        for name, damage in audio_damage.items():
            rows = [audio_scores.score_audio(damage(c.audio), rate, c.truth, fps) for c in clips]
            mean = lambda k, sel=None: np.nanmean([r[k] for r, b in zip(rows, bounced) if sel is None or b])
            print(f"{name:<22} {mean('pitch_class_correct'):6.3f} {mean('pitch_cents_error'):6.1f} "
                  f"{mean('click_f1'):8.3f} {mean('click_f1', True):8.3f} {mean('click_timing_error_ms'):6.1f}")


if __name__ == "__main__":
    main()
