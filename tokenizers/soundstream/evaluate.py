"""Held-out quality of a SoundStream tokenizer: SI-SNR and log-mel distance per bit rate.

    python -m vp_tokenizers.soundstream.evaluate --checkpoint_dir=/tmp/soundstream_demo/checkpoints

prints, for n = 1..levels RVQ levels, the mean SI-SNR (dB, higher is better) and the mean
log-mel distance (lower is better) of encode -> keep n levels -> decode on held-out audio
(the training config's held-out source unless --source/--path say otherwise), and writes
the figures as JSON with --output_json. Clips are cropped to whole frames first (see
api.AudioTokenizer), and the metrics compare the cropped input with its reconstruction.
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from . import losses
from .api import AudioTokenizer
from .data import heldout_clips


def evaluate_tokenizer(tokenizer: AudioTokenizer, clips: np.ndarray, batch_size: int = 16) -> dict[str, float]:
    """clips float32 [N, samples] -> {'si_snr_db/{n}_levels': .., 'log_mel_distance/{n}_levels': ..}."""
    usable = tokenizer.num_frames(clips.shape[1]) * tokenizer.hop_length
    clips = clips[:, :usable]
    per_level = {n: {"si_snr": [], "log_mel": []} for n in range(1, tokenizer.levels + 1)}
    for start in range(0, len(clips), batch_size):
        batch = clips[start:start + batch_size]
        ids = tokenizer.encode(batch)
        for n in per_level:
            estimate = jnp.asarray(tokenizer.decode(ids[:, :n]))
            target = jnp.asarray(batch)
            per_level[n]["si_snr"].append(np.asarray(losses.si_snr(target, estimate)))
            per_level[n]["log_mel"].append(
                np.asarray(losses.log_mel_distance(target, estimate, tokenizer.sample_rate)))
    results = {}
    for n, values in per_level.items():
        results[f"si_snr_db/{n}_levels"] = float(np.mean(np.concatenate(values["si_snr"])))
        results[f"log_mel_distance/{n}_levels"] = float(np.mean(np.concatenate(values["log_mel"])))
    return results


def define_flags():
    flags.DEFINE_string("checkpoint_dir", None, "SoundStream checkpoint directory (from train.py).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
    flags.DEFINE_string("source", None, "Held-out source: demo, audio_folder or video_audio "
                        "(default: the training config's).")
    flags.DEFINE_string("path", None, "Folder of held-out files for a file source.")
    flags.DEFINE_integer("num_clips", 32, "How many held-out clips.")
    flags.DEFINE_float("seconds", 2.125, "Length of each held-out clip in seconds.")
    flags.DEFINE_string("output_json", None, "Also write the figures here.")
    flags.mark_flag_as_required("checkpoint_dir")


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)  # Orbax logs every restore at INFO and WARNING.
    FLAGS = flags.FLAGS
    tokenizer = AudioTokenizer.load(FLAGS.checkpoint_dir, FLAGS.step)
    data_config = tokenizer.config.data
    if FLAGS.source:
        data_config.source = FLAGS.source
    if FLAGS.path:
        data_config.eval_path = FLAGS.path
    num_samples = int(round(FLAGS.seconds * tokenizer.sample_rate))
    clips = heldout_clips(data_config, tokenizer.sample_rate, FLAGS.num_clips, num_samples,
                          seed=int(tokenizer.config.seed))
    results = evaluate_tokenizer(tokenizer, clips)
    print(f"[soundstream eval] {tokenizer.checkpoint_id} on {len(clips)} held-out "
          f"{data_config.source} clips of {num_samples} samples")
    for n in range(1, tokenizer.levels + 1):
        print(f"  {n} level(s): SI-SNR {results[f'si_snr_db/{n}_levels']:6.2f} dB   "
              f"log-mel distance {results[f'log_mel_distance/{n}_levels']:.3f}")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"checkpoint_id": tokenizer.checkpoint_id, **results}, f, indent=2)


if __name__ == "__main__":
    define_flags()  # only as a program, so importing this module defines no flags
    app.run(main)
