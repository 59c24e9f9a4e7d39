"""Input pipeline speed: batches/s and examples/s, against the rate the demo trainer eats them.

    python bench/input_pipeline.py                       # pipeline figures only
    python bench/input_pipeline.py --trainer_steps=40    # + the real trainer's step rate

Data: synthetic shards (`data_pipelines.testing`) at the embedded demo's token geometry
(experiments/magvit2_demo.py + soundstream_demo.py: video latents (5, 8, 8) of 8 bits,
audio 4 levels x 256 codes x 53 frames, 16 text slots) and the demo job's config.data,
batch size and tasks (experiments/t2v_base.py, every task and the image/video schedule).
Figures:
  train_input   `TrainInput.next_batch` (what the trainer calls: one seqio Mixture per
                length group, converted and batched, a group drawn per step): start-up
                (building the pipelines) and first batch (filling the shuffle buffers)
                printed apart, then steady batches/s, examples/s, tokens/s.
  position      `TrainInput.save` / `restore` of the exact data position (the tf.data
                iterator states the trainer writes into every checkpoint): seconds and MB.
  trainer       with --trainer_steps=N: `vp_jax.trainer.train` on the same shards and the
                demo config for N steps, steady-state steps/s (steps before each group's
                first compile finishes are excluded). Without it, the ratio uses
                --assume_trainer_steps_per_s.
Ends with: train_input_batches_per_s=<v> save_s=<v> saved_mb=<v> trainer_steps_per_s=<v> ratio=<v>
(ratio = train_input batches/s over trainer steps/s; the issue asks for >= 10).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import numpy as np

from data_pipelines import testing
from data_pipelines.input_pipeline import TrainInput
from vp_jax.tasks import Geometry
from vp_jax.vocabulary import Vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_GEOMETRY = Geometry(video_latent_shape=(5, 8, 8), audio_shape=(4, 53), text_length=16)
DEMO_VOCAB = Vocabulary(visual_bits=8, audio_levels=4, audio_codebook_size=256,
                        text_vocab_size=len(testing.WORDS))


def demo_job_config():
    path = os.path.join(REPO, "experiments", "t2v_base.py")
    spec = importlib.util.spec_from_file_location("t2v_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def time_train_input(data_config, batch_size: int, num_batches: int, total_steps: int):
    start = time.perf_counter()
    train_input = TrainInput(data_config, batch_size, seed=0, process_index=0, process_count=1,
                             total_steps=total_steps)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    train_input.next_batch()
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    tokens = 0
    for _ in range(num_batches):
        _, batch = train_input.next_batch()
        tokens += batch["input_tokens"].size
    elapsed = time.perf_counter() - start
    return train_input, build_s, first_s, num_batches / elapsed, tokens / elapsed


def time_position(train_input, data_config, batch_size: int, total_steps: int, directory: str):
    """Seconds to save and to restore the exact data position, and its size on disk (MB)."""
    start = time.perf_counter()
    train_input.save(directory)
    save_s = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)
    resumed = TrainInput(data_config, batch_size, seed=0, process_index=0, process_count=1,
                         total_steps=total_steps)
    start = time.perf_counter()
    resumed.restore(directory)
    restore_s = time.perf_counter() - start
    expected, got = train_input.next_batch(), resumed.next_batch()
    assert expected[0] == got[0] and all(np.array_equal(expected[1][k], got[1][k]) for k in got[1])
    resumed.close()
    return save_s, restore_s, size / 2 ** 20


def time_trainer(config, workdir: str, num_steps: int) -> float:
    from vp_jax import trainer

    config.train.update(num_steps=num_steps, log_every_steps=max(1, num_steps // 4),
                        eval_every_steps=10 ** 9, checkpoint_every_steps=10 ** 9)
    config.optimizer.warmup_steps = min(int(config.optimizer.warmup_steps), num_steps // 4)
    stamps = []
    trainer.train(config, workdir, on_step=lambda step, metrics: stamps.append(time.perf_counter()))
    # The first step of each group compiles: keep the second half of the run (every group
    # seen by then; the trainer reads each step's metrics back, so stamps are step times).
    times = np.array(stamps)
    half = len(times) // 2
    return (len(times) - 1 - half) / (times[-1] - times[half])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_examples", type=int, default=512)
    parser.add_argument("--num_batches", type=int, default=200)
    parser.add_argument("--trainer_steps", type=int, default=0)
    parser.add_argument("--assume_trainer_steps_per_s", type=float, default=2.0)
    args = parser.parse_args()

    config = demo_job_config()
    workdir = tempfile.mkdtemp(prefix="bench_input_")
    shards_dir = os.path.join(workdir, "shards")
    start = time.perf_counter()
    testing.write_synthetic_shards(shards_dir, args.num_examples, geometry=DEMO_GEOMETRY,
                                   vocab=DEMO_VOCAB, num_shards=4)
    print(f"wrote {args.num_examples} synthetic demo-geometry clips in {time.perf_counter() - start:.1f}s")
    config.data.shards_dir = shards_dir
    batch, total_steps = int(config.train.batch_size), int(config.train.num_steps)
    train_input, build_s, first_s, batches_per_s, tokens_per_s = time_train_input(
        config.data, batch, args.num_batches, total_steps)
    print(f"groups: {[(g.name, g.length, g.tasks) for g in train_input.groups]}")
    print(f"train_input: start-up {build_s:.2f}s, first batch {first_s:.2f}s, then {batches_per_s:.1f} "
          f"batches/s, {batches_per_s * batch:.0f} examples/s, {tokens_per_s:.0f} tokens/s (batch {batch})")
    save_s, restore_s, saved_mb = time_position(train_input, config.data, batch, total_steps,
                                                os.path.join(workdir, "position"))
    train_input.close()
    print(f"position: save {save_s:.2f}s, restore {restore_s:.2f}s, {saved_mb:.1f} MB "
          f"(shuffle_buffer_size {config.data.get('shuffle_buffer_size', 1000)}), next batches equal")
    if args.trainer_steps:
        trainer_rate = time_trainer(config, workdir, args.trainer_steps)
        print(f"trainer (experiments/t2v_base.py model, batch {batch}): {trainer_rate:.2f} steps/s")
    else:
        trainer_rate = args.assume_trainer_steps_per_s
        print(f"trainer: assumed {trainer_rate} steps/s (run with --trainer_steps=N to measure)")
    print(f"train_input_batches_per_s={batches_per_s:.1f} save_s={save_s:.2f} saved_mb={saved_mb:.1f} "
          f"trainer_steps_per_s={trainer_rate:.2f} ratio={batches_per_s / trainer_rate:.1f}")


if __name__ == "__main__":
    main()
