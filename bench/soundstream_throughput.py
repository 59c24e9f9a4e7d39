"""SoundStream throughput: training steps/s and audio-seconds/s, tokenizer encode/decode speed.

    python bench/soundstream_throughput.py --config=experiments/soundstream_demo.py --steps=30
    python bench/soundstream_throughput.py --config=experiments/soundstream_paper.py --steps=10 --batch=8

Prints, for the config's model (random weights; speed does not depend on them):
  * train: compile time, steady-state steps/s and seconds of audio trained per second;
  * encode / decode: seconds of audio per second (real-time factor) for [batch, 2.125 s] clips.
Measured on whatever devices JAX sees; on a shared CPU the figures vary with load.
"""
from __future__ import annotations

import time

import jax
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from vp_tokenizers.soundstream import train as train_lib
from vp_tokenizers.soundstream.api import AudioTokenizer
from vp_tokenizers.soundstream.data import batches, make_audio_source
from vp_tokenizers.soundstream.model import soundstream_from_config


def bench_training(config, steps: int, batch: int) -> None:
    model = soundstream_from_config(config.model)
    tx = optax.adam(1e-4)
    disc = train_lib.make_discriminator(config) if train_lib.adversarial_enabled(config) else None
    disc_tx = optax.adam(1e-4) if disc else None
    key = jax.random.key(0, impl="rbg")
    state = jax.jit(train_lib.make_init_fn(config, model, tx, disc, disc_tx))(key)
    step = jax.jit(train_lib.make_train_step(config, model, tx, disc, disc_tx, key), donate_argnums=0)
    data = batches(make_audio_source(config.data, config.sample_rate, seed=0), batch)
    wave = next(data)
    start = time.perf_counter()
    state, metrics = step(state, wave)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    waves = [next(data) for _ in range(steps)]
    start = time.perf_counter()
    for wave in waves:
        state, metrics = step(state, wave)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start
    audio_s = steps * batch * config.data.crop_samples / config.sample_rate
    print(f"train: batch {batch} x {config.data.crop_samples} samples, compile {compile_s:.1f}s, "
          f"{steps / elapsed:.2f} step/s, {audio_s / elapsed:.1f} s of audio/s "
          f"(adversarial {'on' if disc else 'off'})")


def bench_tokenizer(config, batch: int, repeats: int = 5) -> None:
    model = soundstream_from_config(config.model)
    variables = jax.jit(lambda k: model.init({"params": k, "quantizer": k},
                                             np.zeros((1, model.hop_length), np.float32)))(
        jax.random.key(0, impl="rbg"))
    tokenizer = AudioTokenizer(config, variables, "bench")
    clips = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, 34000)).astype(np.float32)
    ids = tokenizer.encode(clips)
    tokenizer.decode(ids)
    audio_s = batch * tokenizer.num_frames(34000) * tokenizer.hop_length / tokenizer.sample_rate
    for name, fn, arg in (("encode", tokenizer.encode, clips), ("decode", tokenizer.decode, ids)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(arg)
        elapsed = (time.perf_counter() - start) / repeats
        print(f"{name}: batch {batch} x 2.125 s -> {elapsed * 1e3:.1f} ms, {audio_s / elapsed:.1f}x real time")


def main(argv):
    del argv
    config = flags.FLAGS.config
    batch = flags.FLAGS.batch or int(config.data.batch_size)
    print(f"devices: {jax.devices()}")
    bench_training(config, flags.FLAGS.steps, batch)
    bench_tokenizer(config, batch)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", "experiments/soundstream_demo.py", "SoundStream config.")
    flags.DEFINE_integer("steps", 30, "Timed training steps (after one compile step).")
    flags.DEFINE_integer("batch", 0, "Batch size (default: the config's).")
    app.run(main)
