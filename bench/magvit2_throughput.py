"""Encode/decode throughput (clips/s) of the MAGVIT-v2 tokenizer, random weights.

    python bench/magvit2_throughput.py --config=experiments/magvit2_demo.py --batch_size=8 --repeats=3
    python bench/magvit2_throughput.py --config=experiments/magvit2_demo.py:fidelity --batch_size=8 --repeats=3
    python bench/magvit2_throughput.py --config=experiments/magvit2_paper.py --batch_size=1 --repeats=1

Times `VideoTokenizer.encode` and `.decode` (jitted; the first call, which compiles, is
reported separately) on clips of the config's geometry and prints one line per figure.
Speed depends on the weights only through their shapes, so random weights are fine.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.config import load_config_file
from vp_tokenizers.magvit2.api import VideoTokenizer
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config, count_params


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", required=True)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default=None, help="override the activation dtype")
  args = parser.parse_args()
  config = load_config_file(args.config)  # 'file.py:variant' picks a variant
  model_dict = dict(config.model)
  if args.dtype:
    model_dict["dtype"] = args.dtype
  model_config = Magvit2Config.from_dict(model_dict)
  d = config.data
  shape = (args.batch_size, d.num_frames, d.height, d.width, 3)
  params = jax.jit(Magvit2(model_config).init)(jax.random.PRNGKey(0), jnp.zeros((1,) + shape[1:]))
  tokenizer = VideoTokenizer(model_config, params, batch_size=args.batch_size)
  clips = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  print(f"device={jax.devices()[0].device_kind} x{jax.device_count()} config={args.config} "
        f"params={count_params(params) / 1e6:.2f}M dtype={model_config.dtype} clip={shape[1:]} "
        f"latents={model_config.latent_shape(*shape[1:4])} batch={args.batch_size}", flush=True)
  for name, fn, arg in [("encode", tokenizer.encode, clips),
                        ("decode", tokenizer.decode, tokenizer.encode(clips))]:
    start = time.perf_counter()
    fn(arg)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.repeats):
      fn(arg)
    per_call = (time.perf_counter() - start) / args.repeats
    print(f"{name}: {args.batch_size / per_call:.3f} clips/s ({per_call:.3f} s per batch of "
          f"{args.batch_size}; first call incl. compile {first:.1f} s)", flush=True)


if __name__ == "__main__":
  main()
