"""Steps/s of the MAGVIT-v2 tokenizer's train step, and how long its clips take to draw.

    python bench/magvit2_train_step.py --config=experiments/magvit2_demo.py --steps=20
    python bench/magvit2_train_step.py --config=experiments/magvit2_demo.py \
        --options="default;xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"

For each phase (image, then video) it jits the trainer's own step (tokenizers/magvit2/train.py
make_phase) once per entry of --options (';'-separated; each entry 'default' or one XLA
compile option as name=value, the value as XLA reads it, e.g. comma-separated fusion types),
runs --warmup steps, then times --steps steps on one fixed batch, and prints one line per
phase and option. Entries alternate over --rounds rounds so a machine's drift shows. It also
times drawing a batch of clips (data_lib.batch_of_clips), which the trainer does between steps.

On the AMD EPYC (AVX2) dev machine, 2026-12-07, two rounds: the image step (16 x 32 x 32) ran
4.35-4.45 steps/s with XLA's default and 4.86-5.09 with
xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,
LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE; the video step
(8 x 9 x 32 x 32), which sets the stage's pace, 0.62-0.64 against 0.62-0.75, and YNNPACK
convolutions beside the default's individual dots made it slower (0.47-0.49). Drawing a batch
took 7-10 ms. An XLA profile of the video step puts its largest costs in the kernel-gradient
convolutions (the whole 16 x 16 or 32 x 32 frame as the window), at 20-35 GFLOP/s.
"""
import argparse
import time

import jax

from vp_jax.config import load_config_file
from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import inflate
from vp_tokenizers.magvit2.model import Magvit2Config
from vp_tokenizers.magvit2.train import make_phase


def parse_options(text: str) -> list[tuple[str, dict]]:
  entries = []
  for entry in filter(None, (e.strip() for e in text.split(";"))):
    if entry == "default":
      entries.append((entry, {}))
      continue
    name, equals, value = entry.partition("=")
    if not (name and equals):  # an empty value is a setting too: no fusions of that kind
      raise ValueError(f"--options entry {entry!r}: expected 'default' or name=value")
    entries.append((entry, {name: value}))
  return entries


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="experiments/magvit2_demo.py")
  parser.add_argument("--options", default="default")
  parser.add_argument("--phases", default="image,video")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  config = load_config_file(args.config)
  video_config = Magvit2Config.from_dict(config.model)
  options = parse_options(args.options)
  print(f"device={jax.devices()[0].device_kind} x{jax.device_count()} config={args.config}", flush=True)
  for name in args.phases.split(","):
    model_config = inflate.image_config_for(video_config) if name == "image" else video_config
    phase = make_phase(name, config, model_config, None)
    source = data_lib.make_source(config.data, "train", phase.num_frames)
    batch = data_lib.batch_of_clips(source, 0, phase.batch_size)  # the first draw loads the images
    start = time.perf_counter()
    for i in range(1, 5):
      data_lib.batch_of_clips(source, i * phase.batch_size, phase.batch_size)
    draw = (time.perf_counter() - start) / 4
    print(f"phase={name} batch={tuple(batch.shape)} draw_batch={draw * 1e3:.1f} ms", flush=True)
    state0 = jax.jit(phase.init_state)(jax.random.PRNGKey(0))
    steps = {}
    for label, opts in options:
      start = time.perf_counter()
      steps[label] = jax.jit(phase.train_step, donate_argnums=(0,), compiler_options=opts or None
                             ).lower(state0, batch).compile()
      print(f"phase={name} options={label} compile={time.perf_counter() - start:.1f} s", flush=True)
    for r in range(args.rounds):
      for label, _ in options:
        state = jax.tree.map(lambda x: x.copy(), state0)
        for _ in range(args.warmup):
          state, metrics = steps[label](state, batch)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(args.steps):
          state, metrics = steps[label](state, batch)
        jax.block_until_ready(state)
        rate = args.steps / (time.perf_counter() - start)
        print(f"phase={name} round={r} options={label} {rate:.2f} steps/s "
              f"({1e3 / rate:.0f} ms/step) l2={float(metrics['l2']):.5f}", flush=True)


if __name__ == "__main__":
  main()
