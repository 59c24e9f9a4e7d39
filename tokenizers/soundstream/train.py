"""Trains the SoundStream audio tokenizer.

    python -m vp_tokenizers.soundstream.train --config=experiments/soundstream_demo.py --workdir=/tmp/soundstream_demo

Reads top to bottom: config -> mesh (pure data parallel) -> data -> state (fresh or restored
from <workdir>/checkpoints) -> k-means codebook start -> jitted step -> loop with progress,
TensorBoard scalars and audio, held-out SI-SNR / log-mel evaluation and Orbax checkpoints.
Running the same command again resumes from the latest checkpoint; the data stream is
re-seeded with the resume step (synthetic and shuffled file crops are not replayed exactly).

Generator loss = spectral_weight * multi-scale STFT + waveform_weight * L1(wave)
  - si_snr_weight * SI-SNR(dB) + commitment_weight * RVQ commitment (+ codebook loss for learned codebooks)
  + [after adversarial_start_step] adversarial_weight * hinge(D(x_hat))
  + feature_matching_weight * feature matching.
The STFT discriminator and its optimizer exist only when adversarial_weight > 0.
"""
from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from vp_jax.checkpointing import Checkpointer
from vp_jax.partitioning import Partitioner
from vp_jax.progress import Progress

from . import discriminator as disc_lib
from . import losses
from .api import AudioTokenizer
from .data import batches, heldout_clips, make_audio_source
from .evaluate import evaluate_tokenizer
from .model import SoundStream, init_soundstream, soundstream_from_config
from .rvq import kmeans_codebooks


@flax.struct.dataclass
class SoundStreamState:
    step: jax.Array
    params: Any
    codebook: Any          # EMA codebooks; {} for learned codebooks
    opt_state: Any
    disc_params: Any       # {} without the adversarial loss
    disc_opt_state: Any


def validate_config(config: ml_collections.ConfigDict) -> None:
    hop = int(np.prod(config.model.strides))
    if config.data.crop_samples % hop:
        raise ValueError(f"config.data.crop_samples={config.data.crop_samples} must be a multiple "
                         f"of the hop length prod(config.model.strides)={hop}")
    if config.data.batch_size < 1 or config.train.num_steps < 1:
        raise ValueError(f"config.data.batch_size={config.data.batch_size} and config.train.num_steps="
                         f"{config.train.num_steps} must be >= 1")
    if config.train.eval_samples < hop:
        raise ValueError(f"config.train.eval_samples={config.train.eval_samples} is shorter than one "
                         f"frame (hop {hop})")
    if config.loss.adversarial_weight < 0 or config.loss.feature_matching_weight < 0:
        raise ValueError("config.loss.adversarial_weight and feature_matching_weight must be >= 0")


def adversarial_enabled(config) -> bool:
    return config.loss.adversarial_weight > 0 or config.loss.feature_matching_weight > 0


def make_discriminator(config) -> disc_lib.StftDiscriminator:
    c = config.discriminator
    return disc_lib.StftDiscriminator(channels=int(c.channels), window_size=int(c.window_size),
                                      hop=int(c.hop))


def make_optimizer(learning_rate: float, warmup_steps: int, num_steps: int, clip: float):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, max(1, warmup_steps), max(num_steps, warmup_steps + 1), learning_rate * 0.1)
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(schedule, b1=0.5, b2=0.9))


def make_init_fn(config, model: SoundStream, tx, disc, disc_tx):
    def init_fn(rng):
        model_rng, disc_rng = jax.random.split(rng)
        variables = init_soundstream(model, model_rng, int(config.data.crop_samples))
        params, codebook = variables["params"], variables.get("codebook", {})
        disc_params, disc_opt_state = {}, {}
        if disc is not None:
            disc_params = disc.init(disc_rng, jnp.zeros((1, config.data.crop_samples)))["params"]
            disc_opt_state = disc_tx.init(disc_params)
        return SoundStreamState(jnp.zeros((), jnp.int32), params, codebook, tx.init(params),
                                disc_params, disc_opt_state)
    return init_fn


def make_train_step(config, model: SoundStream, tx, disc, disc_tx, base_rng):
    """(state, wave [batch, samples]) -> (state, metrics). Pure; jit it."""
    c = config.loss

    def generator_loss(params, state, wave, rng, adversarial_on):
        variables = {"params": params, **({"codebook": state.codebook} if state.codebook else {})}
        out, mutated = model.apply(variables, wave, train=True, rngs={"quantizer": rng},
                                   mutable=["codebook"])
        recon = out["reconstruction"]
        spectral = losses.multiscale_spectral_loss(wave, recon, tuple(c.spectral_windows))
        waveform = losses.waveform_l1(wave, recon)
        negative_si_snr = -jnp.mean(losses.si_snr(wave, recon))
        total = (c.spectral_weight * spectral + c.waveform_weight * waveform
                 + c.si_snr_weight * negative_si_snr
                 + c.commitment_weight * out["commitment_loss"] + out["codebook_loss"])
        metrics = {"spectral_loss": spectral, "waveform_l1": waveform, "train_si_snr_db": -negative_si_snr,
                   "commitment_loss": out["commitment_loss"]}
        if disc is not None:
            fake_logits, fake_features = disc.apply({"params": state.disc_params}, recon)
            _, real_features = disc.apply({"params": state.disc_params}, wave)
            adversarial = disc_lib.generator_hinge_loss(fake_logits)
            matching = disc_lib.feature_matching_loss(real_features, fake_features)
            total += adversarial_on * (c.adversarial_weight * adversarial
                                       + c.feature_matching_weight * matching)
            metrics.update(generator_adversarial_loss=adversarial, feature_matching_loss=matching)
        metrics["loss"] = total
        for level in range(model.levels):
            metrics[f"codebook_usage/level{level}"] = out["usage_fraction"][level]
        return total, (metrics, mutated.get("codebook", {}), recon)

    def train_step(state: SoundStreamState, wave):
        rng = jax.random.fold_in(base_rng, state.step)
        adversarial_on = (state.step >= c.adversarial_start_step).astype(jnp.float32)
        grads, (metrics, codebook, recon) = jax.grad(generator_loss, has_aux=True)(
            state.params, state, wave, rng, adversarial_on)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
        if disc is not None:
            def disc_loss(disc_params):
                real_logits, _ = disc.apply({"params": disc_params}, wave)
                fake_logits, _ = disc.apply({"params": disc_params}, jax.lax.stop_gradient(recon))
                return disc_lib.discriminator_hinge_loss(real_logits, fake_logits)
            d_loss, d_grads = jax.value_and_grad(disc_loss)(disc_params)
            d_updates, disc_opt_state = disc_tx.update(d_grads, disc_opt_state, disc_params)
            disc_params = optax.apply_updates(disc_params, d_updates)
            metrics["discriminator_loss"] = d_loss
        state = SoundStreamState(state.step + 1, params, codebook, opt_state, disc_params, disc_opt_state)
        return state, metrics

    return train_step


def kmeans_start(config, model: SoundStream, state: SoundStreamState, wave, rng) -> SoundStreamState:
    """Replaces the random codebooks with residual k-means of the first batch's latents."""
    variables = {"params": state.params, **({"codebook": state.codebook} if state.codebook else {})}
    latents = model.apply(variables, wave, method=SoundStream.encode_latents)
    codebooks = kmeans_codebooks(latents.reshape(-1, latents.shape[-1]), model.levels,
                                 model.codebook_size, rng, int(config.model.kmeans_iterations))
    if model.codebook_kind == "learned":
        quantizer = {**state.params["quantizer"], "codebooks": codebooks}
        return state.replace(params={**state.params, "quantizer": quantizer})
    _, mutated = model.apply(variables, codebooks, method=SoundStream.set_codebooks,
                             mutable=["codebook"])
    return state.replace(codebook=mutated["codebook"])


def checkpoint_metadata(config, step: int) -> dict:
    return {"config": config.to_dict(), "data": {"seed": int(config.seed), "resume_step": int(step)}}


def train(config: ml_collections.ConfigDict, workdir: str) -> SoundStreamState:
    validate_config(config)
    partitioner = Partitioner(dict(config.train.mesh_shape), allow_unnamed_params=True)
    model = soundstream_from_config(config.model)
    tc = config.train
    tx = make_optimizer(tc.learning_rate, tc.warmup_steps, tc.num_steps, tc.grad_clip_norm)
    disc = make_discriminator(config) if adversarial_enabled(config) else None
    disc_tx = optax.adam(tc.discriminator_learning_rate, b1=0.5, b2=0.9) if disc else None
    init_fn = make_init_fn(config, model, tx, disc, disc_tx)
    # RBG keys: XLA on CPU compiles the threefry-based initialisation of the ~50 conv kernels
    # 3-4x slower (tens of seconds); the random streams are as good for training.
    init_rng, kmeans_rng, step_rng = jax.random.split(jax.random.key(config.seed, impl="rbg"), 3)

    checkpoint_dir = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(checkpoint_dir, max_to_keep=3,
                                save_interval_steps=int(tc.checkpoint_every_steps))
    abstract_state, state_shardings = partitioner.abstract_sharded(init_fn, init_rng)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state, _ = checkpointer.restore(abstract_state, start_step)
        print(f"[soundstream] resumed from {checkpoint_dir} at step {start_step}")
    else:
        state, _ = partitioner.init_sharded(init_fn, init_rng)

    if config.data.batch_size % jax.process_count():
        raise ValueError(f"config.data.batch_size={config.data.batch_size} is not divisible by the "
                         f"{jax.process_count()} processes")
    process_rows = config.data.batch_size // jax.process_count()
    source = make_audio_source(config.data, config.sample_rate, seed=config.seed + start_step,
                               process_index=jax.process_index(), process_count=jax.process_count())
    data = batches(source, process_rows)
    if not start_step and config.model.kmeans_init:
        first = partitioner.shard_host_batch({"wave": next(data)})["wave"]
        state = jax.jit(lambda s, w, r: kmeans_start(config, model, s, w, r),
                        out_shardings=state_shardings)(state, first, kmeans_rng)

    train_step = jax.jit(make_train_step(config, model, tx, disc, disc_tx, step_rng),
                         in_shardings=(state_shardings, partitioner.data_sharding),
                         out_shardings=(state_shardings, partitioner.replicated), donate_argnums=0)
    hop = model.hop_length
    eval_samples = (int(tc.eval_samples) // hop) * hop
    eval_waves = heldout_clips(config.data, config.sample_rate, int(tc.eval_clips), eval_samples,
                               seed=config.seed)
    tokenizer = AudioTokenizer(config, {}, checkpoint_id=f"soundstream:{checkpoint_dir}@training")
    progress = Progress(int(tc.num_steps), os.path.join(workdir, "tensorboard"), "soundstream",
                        log_every_steps=int(tc.log_every_steps), first_step=start_step)

    def evaluate(step: int, state: SoundStreamState):
        variables = {"params": state.params, **({"codebook": state.codebook} if state.codebook else {})}
        evaluator = tokenizer.with_variables(variables)
        results = evaluate_tokenizer(evaluator, eval_waves)
        progress.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
        full = results[f"si_snr_db/{model.levels}_levels"]
        print(f"[soundstream] step {step} held-out SI-SNR ({model.levels} levels) {full:.2f} dB, "
              f"log-mel {results[f'log_mel_distance/{model.levels}_levels']:.3f}")
        examples = eval_waves[:2]
        recon = evaluator.decode(evaluator.encode(examples))
        progress.write_audio(step, {"eval/original": examples, "eval/reconstruction": recon},
                             config.sample_rate)
        return results

    for step in range(start_step + 1, int(tc.num_steps) + 1):
        wave = partitioner.shard_host_batch({"wave": next(data)})["wave"]
        state, metrics = train_step(state, wave)
        progress.update(step, metrics, items=int(config.data.batch_size))
        if step % tc.eval_every_steps == 0 or step == tc.num_steps:
            evaluate(step, state)
        checkpointer.save(step, state, checkpoint_metadata(config, step), force=step == tc.num_steps)
    checkpointer.close()
    progress.close()
    return state


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every manager call at INFO.
    train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module never clashes
    # with another program's --config / --workdir.
    config_flags.DEFINE_config_file("config", None, "SoundStream experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints and TensorBoard logs go here.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
