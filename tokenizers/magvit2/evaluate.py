"""Held-out reconstruction quality of a trained tokenizer: PSNR, SSIM, codebook usage.

    python -m vp_tokenizers.magvit2.evaluate --config=experiments/magvit2_demo.py \
        --checkpoint_dir=/tmp/magvit2_demo/checkpoints [--num_clips=128] [--output=eval.json]

Clips come from the config's data source, split 'eval' (for 'photo_pans' the held-out
photos, which training never sees). Prints one JSON line with the figures.
"""
import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import metrics
from vp_tokenizers.magvit2.api import VideoTokenizer

FLAGS = flags.FLAGS


def evaluate_clips(tokenizer: VideoTokenizer, clips: np.ndarray) -> tuple[dict, np.ndarray]:
  """Encodes and decodes uint8 clips [N, T, H, W, 3]; returns (figures, reconstructions).

  Figures: mean PSNR (dB) and SSIM over clips, the fraction of the 2^K codes used by all the
  clips' tokens together, the codebook perplexity, and the token count.
  """
  counter = metrics.CodebookCounter(tokenizer.bits)
  ids = tokenizer.encode(clips)
  counter.add(ids)
  reconstructions = tokenizer.decode(ids)
  figures = {
      "psnr": float(np.mean(metrics.psnr(clips, reconstructions))),
      "ssim": float(np.mean(metrics.ssim(clips, reconstructions))),
      "codebook_usage": counter.usage,
      "codebook_perplexity": counter.perplexity,
      "num_tokens": int(ids.size),
      "num_clips": int(clips.shape[0]),
  }
  return figures, reconstructions


def held_out_clips(config, num_clips: int, num_frames: int | None = None) -> np.ndarray:
  """The first `num_clips` clips of the config's 'eval' split: uint8 [N, T, H, W, 3]."""
  source = data_lib.make_source(config.data, "eval", num_frames)
  return data_lib.batch_of_clips(source, 0, num_clips)


def main(argv):
  del argv
  config = FLAGS.config
  tokenizer = VideoTokenizer.load(FLAGS.checkpoint_dir, FLAGS.step, batch_size=config.eval.batch_size)
  clips = held_out_clips(config, FLAGS.num_clips or config.eval.num_clips)
  figures, _ = evaluate_clips(tokenizer, clips)
  figures["checkpoint_id"] = tokenizer.checkpoint_id
  line = json.dumps(figures)
  print(line)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  # Flags are defined here, not at import, so the trainer can import this module.
  config_flags.DEFINE_config_file("config", None, "Tokenizer config file.", lock_config=True)
  flags.DEFINE_string("checkpoint_dir", None, "Tokenizer checkpoint directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_integer("num_clips", None, "Held-out clips (default: config.eval.num_clips).")
  flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
  flags.mark_flags_as_required(["config", "checkpoint_dir"])
  app.run(main)
