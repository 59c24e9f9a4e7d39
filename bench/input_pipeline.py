"""Input pipeline speed: batches/s and examples/s, against the rate the demo trainer eats them.

    python bench/input_pipeline.py                       # pipeline figures only
    python bench/input_pipeline.py --trainer_steps=40    # + the real trainer's step rate

Data: synthetic shards (`data_pipelines.testing`) at the embedded demo's token geometry
(experiments/magvit2_demo.py + soundstream_demo.py: video latents (5, 8, 8) of 10 bits,
audio 4 levels x 256 codes x 53 frames, 16 text slots) and the demo job's config.data,
batch size and tasks (experiments/t2v_base.py, every task and the image/video schedule).
Figures:
  train_input   `TrainInput.next_batch` (what the trainer calls): batches/s, examples/s,
                tokens/s, after loading the split into memory (load time printed apart).
  seqio         one length group's seqio Mixture + `VideoPoetFeatureConverter` + batch, the
                standard SeqIO path (evaluation, external tooling), same batch size.
  trainer       with --trainer_steps=N: `vp_jax.trainer.train` on the same shards and the
                demo config for N steps, steady-state steps/s (steps before each group's
                first compile finishes are excluded). Without it, the ratio uses
                --assume_trainer_steps_per_s.
Ends with: train_input_batches_per_s=<v> seqio_batches_per_s=<v> trainer_steps_per_s=<v> ratio=<v>
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
from data_pipelines.feature_converter import VideoPoetFeatureConverter
from data_pipelines.input_pipeline import TrainInput
from data_pipelines.mixtures import register_group_mixtures
from data_pipelines.seqio_tasks import ShardDataset, register_seqio_tasks
from vp_jax.tasks import Geometry
from vp_jax.vocabulary import Vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_GEOMETRY = Geometry(video_latent_shape=(5, 8, 8), audio_shape=(4, 53), text_length=16)
DEMO_VOCAB = Vocabulary(visual_bits=10, audio_levels=4, audio_codebook_size=256,
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
    load_s = time.perf_counter() - start
    train_input.next_batch()
    start = time.perf_counter()
    tokens = 0
    for _ in range(num_batches):
        _, batch = train_input.next_batch()
        tokens += batch["input_tokens"].size
    elapsed = time.perf_counter() - start
    return load_s, num_batches / elapsed, tokens / elapsed, train_input.groups


def time_seqio(shards_dir: str, data_config, groups, batch_size: int, num_batches: int):
    dataset = ShardDataset.open(shards_dir)
    group = groups[0]
    tasks = register_seqio_tasks(dataset, list(group.tasks), float(data_config.text_dropout))
    mixture = register_group_mixtures(tasks, [group])[group.name]
    lengths = {"inputs": group.length, "targets": group.length, "task_index": 1}
    ds = mixture.get_dataset(None, split="train", shuffle=True, seed=0, num_epochs=None)
    ds = VideoPoetFeatureConverter(dataset.vocab)(ds, lengths).batch(batch_size).prefetch(2)
    it = ds.as_numpy_iterator()
    next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return group.name, num_batches / (time.perf_counter() - start)


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
    batch = int(config.train.batch_size)
    load_s, batches_per_s, tokens_per_s, groups = time_train_input(
        config.data, batch, args.num_batches, int(config.train.num_steps))
    print(f"groups: {[(g.name, g.length, g.tasks) for g in groups]}")
    print(f"train_input: load {load_s:.2f}s, {batches_per_s:.1f} batches/s, "
          f"{batches_per_s * batch:.0f} examples/s, {tokens_per_s:.0f} tokens/s (batch {batch})")
    group_name, seqio_batches_per_s = time_seqio(shards_dir, config.data, groups, batch,
                                                 max(10, args.num_batches // 4))
    print(f"seqio mixture ({group_name}): {seqio_batches_per_s:.1f} batches/s, "
          f"{seqio_batches_per_s * batch:.0f} examples/s")
    if args.trainer_steps:
        trainer_rate = time_trainer(config, workdir, args.trainer_steps)
        print(f"trainer (experiments/t2v_base.py model, batch {batch}): {trainer_rate:.2f} steps/s")
    else:
        trainer_rate = args.assume_trainer_steps_per_s
        print(f"trainer: assumed {trainer_rate} steps/s (run with --trainer_steps=N to measure)")
    print(f"train_input_batches_per_s={batches_per_s:.1f} seqio_batches_per_s={seqio_batches_per_s:.1f} "
          f"trainer_steps_per_s={trainer_rate:.2f} ratio={batches_per_s / trainer_rate:.1f}")


if __name__ == "__main__":
    main()
