"""Trains the MAGVIT-v2 video tokenizer.

    python -m vp_tokenizers.magvit2.train --config=experiments/magvit2_demo.py \
        --workdir=/tmp/magvit2_demo

Reads top to bottom: config -> mesh -> data -> state (restored if the workdir has a
checkpoint) -> jitted step -> loop with progress, evaluation, image/gif summaries and
checkpoints. Training is image-first when `train.image_steps > 0`: the image model (same
widths, temporal kernel 1) trains on single frames, then its kernels are inflated to causal
3D (`inflate.py`) and the video model trains on clips (of `train.video_num_frames` frames
when set: the model is causal and convolutional, so it trains on short clips and runs on
long ones, for about half the cost per clip at 9 instead of 17 frames). The state is data parallel: it is
replicated over the mesh made by `vp_jax.partitioning.Partitioner` and the batch is split
over ('data', 'fsdp').

Losses (weights in `config.loss`): L2 reconstruction, LFQ commitment and annealed entropy
penalty, optional perceptual loss (`perceptual.py`), optional non-saturating adversarial
loss against a StyleGAN-style discriminator with R1 and LeCam regularisation. Generator
weights are tracked with an EMA, which is what `VideoTokenizer.load` and the evaluation use.
"""
import dataclasses
import json
import os
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from vp_jax import checkpointing
from vp_jax.optimizer import make_schedule
from vp_jax import partitioning
from vp_jax import progress as progress_lib
from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import evaluate
from vp_tokenizers.magvit2 import inflate
from vp_tokenizers.magvit2 import lfq
from vp_tokenizers.magvit2 import losses
from vp_tokenizers.magvit2 import perceptual
from vp_tokenizers.magvit2.api import VideoTokenizer
from vp_tokenizers.magvit2.discriminator import Discriminator
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config

FLAGS = flags.FLAGS


def validate_config(config) -> None:
  """Fails early, naming the field, on values the trainer cannot use."""
  t, l = config.train, config.loss
  checks = [
      (t.num_steps >= 1, "train.num_steps", t.num_steps, ">= 1"),
      (0 <= t.image_steps < t.num_steps, "train.image_steps", t.image_steps, "in [0, num_steps)"),
      (t.batch_size >= 1 and t.image_batch_size >= 1, "train.batch_size/image_batch_size",
       (t.batch_size, t.image_batch_size), ">= 1"),
      (t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0"),
      (t.video_num_frames == 0 or t.video_num_frames <= config.data.num_frames,
       "train.video_num_frames", t.video_num_frames, f"0 (= data.num_frames) or <= {config.data.num_frames}"),
      (t.lr_schedule in ("constant", "cosine"), "train.lr_schedule", t.lr_schedule,
       "'constant' or 'cosine'"),
      (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "in [0, 1]"),
      (0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in [0, 1)"),
      (l.entropy_temperature > 0, "loss.entropy_temperature", l.entropy_temperature, "> 0"),
      (min(l.reconstruction_weight, l.commitment_weight, l.entropy_weight, l.perceptual_weight,
           l.adversarial_weight, l.r1_gamma, l.lecam_weight) >= 0, "loss.*_weight",
       dict(l), "all >= 0"),
  ]
  for ok, field, value, expected in checks:
    if not ok:
      raise ValueError(f"config.{field}={value!r}: expected {expected}")
  model = Magvit2Config.from_dict(config.model)
  model.latent_shape(config.data.num_frames, config.data.height, config.data.width)
  if t.video_num_frames:
    model.latent_shape(t.video_num_frames, config.data.height, config.data.width)


def make_optimizer(learning_rate: float, train_config, phase_steps: int) -> optax.GradientTransformation:
  """Adam with linear warm-up, then `train.lr_schedule` ('constant' or 'cosine' down to
  `train.min_lr_ratio` * lr at the end of the phase; vp_jax/optimizer.py's schedules).

  Each phase (image, video) starts a fresh optimizer, so its schedule spans its own steps.
  """
  schedule = make_schedule(dict(lr=learning_rate, warmup_steps=max(train_config.warmup_steps, 1),
                                schedule=train_config.lr_schedule, min_lr_ratio=train_config.min_lr_ratio,
                                name="adam", b1=train_config.adam_b1, b2=train_config.adam_b2, eps=1e-8,
                                weight_decay=0.0, grad_clip_norm=train_config.grad_clip_norm),
                           phase_steps)
  return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm),
                     optax.adam(schedule, b1=train_config.adam_b1, b2=train_config.adam_b2))


@dataclasses.dataclass
class Phase:
  """One training phase ('image' or 'video'): its model, state initialiser and jitted step."""
  name: str
  model_config: Magvit2Config
  batch_size: int
  num_frames: int
  init_state: Callable[[jax.Array], Any]
  train_step: Callable[[Any, jax.Array], tuple[Any, dict]]


def make_phase(name: str, config, model_config: Magvit2Config, perceptual_fn) -> Phase:
  """Builds the model, the discriminator, the optimizers and the (unjitted) step of a phase."""
  tc, lc, dc = config.train, config.loss, config.discriminator
  num_frames = 1 if name == "image" else (tc.video_num_frames or config.data.num_frames)
  batch_size = tc.image_batch_size if name == "image" else tc.batch_size
  model = Magvit2(model_config)
  disc = Discriminator(dc.base_channels, tuple(dc.channel_multipliers), model_config.dtype)
  phase_steps = tc.image_steps if name == "image" else tc.num_steps - tc.image_steps
  optimizer = make_optimizer(tc.learning_rate, tc, phase_steps)
  disc_optimizer = make_optimizer(dc.learning_rate, tc, phase_steps)
  use_gan = lc.adversarial_weight > 0

  def init_state(rng):
    sample = jnp.zeros((1, num_frames, config.data.height, config.data.width, 3), jnp.float32)
    params = model.init(jax.random.fold_in(rng, 0), sample)
    disc_params = disc.init(jax.random.fold_in(rng, 1), sample) if use_gan else {}
    return {"step": jnp.zeros((), jnp.int32), "params": params, "ema_params": params,
            "opt_state": optimizer.init(params), "disc_params": disc_params,
            "disc_opt_state": disc_optimizer.init(disc_params),
            "lecam_ema": jnp.zeros((2,), jnp.float32)}

  def train_step(state, batch):
    video = batch.astype(jnp.float32) / 127.5 - 1.0
    step = state["step"]
    adversarial_on = (step >= lc.adversarial_start_step).astype(jnp.float32)

    def generator_loss(params):
      recon, aux = model.apply(params, video)
      l2 = losses.reconstruction_l2(video, recon)
      commit = lfq.commitment_loss(aux["z"])
      ent = lfq.entropy_terms(aux["z"], lc.entropy_temperature, lc.entropy_group_bits)
      ent_weight = lfq.entropy_weight(step, lc.entropy_weight, lc.entropy_start_multiplier,
                                      lc.entropy_anneal_steps)
      total = (lc.reconstruction_weight * l2 + lc.commitment_weight * commit
               + ent_weight * (ent.per_sample_entropy - ent.codebook_entropy))
      metrics = {"l2": l2, "psnr": losses.psnr_from_mse(l2), "commitment": commit,
                 "per_sample_entropy": ent.per_sample_entropy,
                 "codebook_entropy": ent.codebook_entropy, "entropy_weight": ent_weight,
                 **lfq.codebook_usage(aux["ids"], model_config.num_bits)}
      if perceptual_fn is not None:
        metrics["perceptual"] = perceptual_fn(recon, video,
                                              jax.random.fold_in(jax.random.key(config.seed), step))
        total += lc.perceptual_weight * metrics["perceptual"]
      if use_gan:
        metrics["generator_adversarial"] = losses.generator_adversarial_loss(
            disc.apply(state["disc_params"], recon))
        total += adversarial_on * lc.adversarial_weight * metrics["generator_adversarial"]
      metrics["loss"] = total
      return total, (recon, metrics)

    (_, (recon, metrics)), grads = jax.value_and_grad(generator_loss, has_aux=True)(state["params"])
    metrics["grad_norm"] = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    decay = jnp.minimum(tc.ema_decay, (1.0 + step) / (10.0 + step))
    ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
    new_state = dict(state, step=step + 1, params=params, ema_params=ema_params, opt_state=opt_state)
    if use_gan:
      new_state.update(_discriminator_update(state, video, jax.lax.stop_gradient(recon),
                                             adversarial_on, metrics))
    return new_state, metrics

  def _discriminator_update(state, real, fake, active, metrics):
    def loss_fn(disc_params):
      apply = lambda x: disc.apply(disc_params, x)
      real_logits, fake_logits = apply(real), apply(fake)
      d_loss = losses.discriminator_loss(real_logits, fake_logits)
      r1 = losses.r1_penalty(apply, real) if lc.r1_gamma > 0 else jnp.zeros(())
      lecam = losses.lecam_penalty(real_logits, fake_logits, *state["lecam_ema"])
      total = d_loss + 0.5 * lc.r1_gamma * r1 + lc.lecam_weight * lecam
      return total, (d_loss, r1, lecam, jnp.stack([real_logits.mean(), fake_logits.mean()]))

    (_, (d_loss, r1, lecam, means)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["disc_params"])
    updates, disc_opt_state = disc_optimizer.update(grads, state["disc_opt_state"], state["disc_params"])
    disc_params = optax.apply_updates(state["disc_params"], updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(active > 0, n, o), new, old)
    metrics.update(discriminator=d_loss, r1=r1, lecam=lecam, logits_real=means[0],
                   logits_fake=means[1])
    return {"disc_params": keep(disc_params, state["disc_params"]),
            "disc_opt_state": keep(disc_opt_state, state["disc_opt_state"]),
            "lecam_ema": keep(0.99 * state["lecam_ema"] + 0.01 * means, state["lecam_ema"])}

  return Phase(name, model_config, batch_size, num_frames, init_state, train_step)


def inflate_state(image_state, video_phase: Phase, rng):
  """Video-phase state whose generator (and EMA) weights are the inflated image weights."""
  fresh = video_phase.init_state(rng)
  params, unmatched = inflate.inflate_params(image_state["params"], fresh["params"])
  ema_params, _ = inflate.inflate_params(image_state["ema_params"], fresh["ema_params"])
  if unmatched:
    print(f"[magvit2] inflation: {len(unmatched)} video-only parameters start as identities: {unmatched[:5]}")
  return dict(fresh, step=image_state["step"], params=params, ema_params=ema_params,
              disc_params=image_state["disc_params"], disc_opt_state=image_state["disc_opt_state"],
              lecam_ema=image_state["lecam_ema"])


def checkpoint_metadata(phase: Phase, data_index: int, config) -> dict:
  """What a checkpoint needs besides arrays: phase, data position, model and full config."""
  return {"phase": phase.name, "data_index": data_index, "model_config": phase.model_config.to_dict(),
          "config": json.loads(config.to_json_best_effort())}


def _side_by_side(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
  """uint8 [N, T, H, W, 3] pairs -> [N, T, H, 2W, 3], original left."""
  return np.concatenate([originals, reconstructions], axis=3)


def run_evaluation(phase: Phase, ema_params, eval_clips: np.ndarray, config, step: int,
                   progress: progress_lib.Progress, workdir: str) -> dict:
  tokenizer = VideoTokenizer(phase.model_config, jax.device_get(ema_params),
                             batch_size=config.eval.batch_size)
  clips = eval_clips[:, :1] if phase.name == "image" else eval_clips
  figures, recon = evaluate.evaluate_clips(tokenizer, clips)
  figures["step"] = step
  figures["phase"] = phase.name
  progress.write_scalars(step, {f"eval/{k}": v for k, v in figures.items() if isinstance(v, float)})
  pairs = _side_by_side(clips[:config.eval.num_summary_clips], recon[:config.eval.num_summary_clips])
  progress.write_images(step, {"eval/reconstruction_first_frame": pairs[:, 0]})
  if phase.name == "video":
    progress.write_videos_as_gif(step, {"eval/reconstruction": pairs}, fps=int(config.data.fps))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.jsonl"), "a") as f:
      f.write(json.dumps(figures) + "\n")
  print(f"[magvit2] eval step {step} ({phase.name}): psnr={figures['psnr']:.2f} dB "
        f"ssim={figures['ssim']:.4f} codebook_usage={figures['codebook_usage']:.3f} "
        f"perplexity={figures['codebook_perplexity']:.1f}", flush=True)
  return figures


def train(config, workdir: str) -> dict:
  """Runs (or resumes) training in `workdir`; returns the final evaluation figures."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  tc = config.train
  partitioner = partitioning.Partitioner(dict(config.mesh), allow_unnamed_params=True)
  video_config = Magvit2Config.from_dict(config.model)
  perceptual_fn = (perceptual.make_perceptual_loss(config.loss.perceptual, workdir)
                   if config.loss.perceptual_weight > 0 else None)
  phases = {"video": make_phase("video", config, video_config, perceptual_fn)}
  if tc.image_steps > 0:
    phases["image"] = make_phase("image", config, inflate.image_config_for(video_config), perceptual_fn)
  jitted = {}

  def compile_phase(phase: Phase, shardings):
    if phase.name not in jitted:
      jitted[phase.name] = jax.jit(phase.train_step, in_shardings=(shardings, partitioner.data_sharding),
                                   out_shardings=(shardings, partitioner.replicated),
                                   donate_argnums=(0,))
    return jitted[phase.name]

  rng = jax.random.PRNGKey(config.seed)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=tc.max_checkpoints,
                                    save_interval_steps=tc.checkpoint_every_steps)
  start_step = ckpt.latest_step()
  if start_step is None:
    phase = phases["image" if tc.image_steps > 0 else "video"]
    state, shardings = partitioner.init_sharded(phase.init_state, rng)
    start_step, data_index = 0, 0
  else:
    metadata = ckpt.restore_metadata(start_step)
    phase = phases[metadata["phase"]]
    abstract, shardings = partitioner.abstract_sharded(phase.init_state, rng)
    state, metadata = ckpt.restore(abstract, start_step)
    data_index = int(metadata["data_index"])
    print(f"[magvit2] resumed from {ckpt.directory}/{start_step} ({phase.name} phase, "
          f"data index {data_index})", flush=True)

  sources = {name: data_lib.make_source(config.data, "train", p.num_frames) for name, p in phases.items()}
  eval_clips = evaluate.held_out_clips(config, config.eval.num_clips)
  progress = progress_lib.Progress(tc.num_steps, os.path.join(workdir, "tensorboard"), "magvit2",
                                   log_every_steps=config.log_every_steps, first_step=start_step)
  step_fn = compile_phase(phase, shardings)
  figures = {}
  for step in range(start_step, tc.num_steps):
    if phase.name == "image" and step >= tc.image_steps:
      run_evaluation(phase, state["ema_params"], eval_clips, config, step, progress, workdir)
      phase = phases["video"]
      _, shardings = partitioner.abstract_sharded(phase.init_state, rng)
      state = jax.jit(lambda s, r: inflate_state(s, phase, r), out_shardings=shardings)(state, rng)
      step_fn = compile_phase(phase, shardings)
      print(f"[magvit2] step {step}: inflated the image model to the causal 3D video model", flush=True)
    host_batch = data_lib.batch_of_clips(sources[phase.name], data_index, phase.batch_size,
                                         jax.process_index(), jax.process_count())
    data_index += phase.batch_size
    batch = partitioner.shard_host_batch({"video": host_batch})["video"]
    state, metrics = step_fn(state, batch)
    done = step + 1
    if progress.should_log(done):
      progress.update(done, {k: float(v) for k, v in jax.device_get(metrics).items()},
                      items=phase.batch_size)
    else:
      progress.update(done, {}, items=phase.batch_size)
    ckpt.save(done, state, metadata=checkpoint_metadata(phase, data_index, config),
              force=done == tc.num_steps)
    if done % config.eval.every_steps == 0 or done == tc.num_steps:
      figures = run_evaluation(phase, state["ema_params"], eval_clips, config, done, progress, workdir)
  ckpt.close()
  progress.close()
  return figures


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  train(FLAGS.config, FLAGS.workdir or FLAGS.config.workdir)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests and other tools can import this module.
  config_flags.DEFINE_config_file("config", None, "Tokenizer config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs, eval results "
                      "(default: config.workdir).")
  flags.mark_flag_as_required("config")
  app.run(main)
