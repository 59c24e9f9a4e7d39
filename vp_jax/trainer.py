"""The LM training loop, read top to bottom: config -> mesh -> data -> state -> step -> loop.

    history = train(config, workdir)     # trains config.train.num_steps steps, resumable
    results = evaluate_checkpoint(config, workdir)   # --mode=eval

Each step draws one AGD length group from the input (one compiled program per group
shape), shards this process's rows into global arrays, and runs the jitted, donated train
step of vp_jax/train_step.py. Around it:

- resume: the latest checkpoint in <workdir>/checkpoints restores the state (onto this
  run's mesh, whatever mesh saved it) and the exact data position (each process's tf.data
  iterator states, saved in the step as its process-local item), so the next losses are
  the ones an uninterrupted run would have produced; with no checkpoint, `init_from` can
  supply the parameters (finetuning / task adaptation);
- NaN/Inf guard: the step never applies a non-finite update; the loop checks the flag one
  step behind (so the host never waits on the device except at log/eval/checkpoint steps,
  where it checks the current step first), then stops with `NonFiniteError` naming the
  step. Only finite states are ever saved, so the last checkpoint stays good;
- logs: a progress line (loss, accuracy, lr, tokens/s, ETA) every log_every_steps and
  TensorBoard scalars per task and per modality, tokens/s and analytic TFLOP/s per device
  (MFU when config.train.peak_flops_per_device is set), all as means over the window;
- eval every eval_every_steps: teacher-forced loss/accuracy per task on config.eval.split,
  also written to <workdir>/eval/step_<n>_<split>.json.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vp_jax import config as config_lib
from vp_jax import flops as flops_lib
from vp_jax.checkpointing import Checkpointer, restore_params
from vp_jax.features import mismatch_conditioning
from vp_jax.files import atomic_open
from vp_jax.losses import summarize_metrics
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig
from vp_jax.optimizer import make_optimizer, make_schedule
from vp_jax.partitioning import Partitioner
from vp_jax.progress import Progress
from vp_jax.tasks import NUM_TASKS, TASKS
from vp_jax.train_step import (TrainStepConfig, create_train_state, jit_eval_step, jit_train_step,
                               make_eval_step, make_train_step)

TASK_NAMES = tuple(task.name for task in TASKS)
CHECKPOINT_DIR = 'checkpoints'
EVAL_DIR = 'eval'
LOG_DIR = 'logs'
LINE_KEYS = ('train/loss', 'train/accuracy', 'train/lr', 'train/grad_norm', 'perf/tflops_per_device')


class NonFiniteError(RuntimeError):
    """A step produced a non-finite loss or gradient; training stopped without saving it."""


@dataclasses.dataclass
class Job:
    """Everything built from the config before the loop starts."""
    config: ml_collections.ConfigDict  # resolved against the data
    partitioner: Partitioner
    model: Transformer
    model_config: TransformerConfig
    step_config: TrainStepConfig
    optimizer: Any
    abstract_state: Any  # jax.ShapeDtypeStruct tree with this mesh's shardings
    state_shardings: Any
    init_fn: Callable
    _eval_step: Callable | None = None

    def eval_step(self) -> Callable:
        """eval(params, global batch) -> sums, jitted once per job (one program per group shape)."""
        if self._eval_step is None:
            self._eval_step = jit_eval_step(self.partitioner, make_eval_step(self.model, self.step_config),
                                            self.state_shardings.params)
        return self._eval_step


def make_partitioner(config: ml_collections.ConfigDict, devices=None) -> Partitioner:
    return Partitioner(config_lib.mesh_shape(config), config.mesh.logical_axis_rules, devices=devices,
                       max_replicated_fraction=config.mesh.get('max_replicated_fraction', 0.1))


def build_job(config: ml_collections.ConfigDict, partitioner: Partitioner) -> Job:
    """Model, optimizer, step config and the abstract sharded state of a resolved config."""
    model_config = TransformerConfig.from_config(config.model)
    model = Transformer(model_config)
    optimizer = make_optimizer(config.optimizer, config.train.num_steps)
    step_config = TrainStepConfig(
        num_tasks=NUM_TASKS, num_microbatches=config.train.microbatches,
        z_loss_weight=float(config.train.get('z_loss_weight', 0.0)),
        task_loss_multipliers=tuple(config_lib.task_loss_multipliers(config)),
        prefix_visual_bit_flip=tuple(config_lib.prefix_visual_bit_flip_rates(config)),
        visual_range=tuple(model_config.visual_range))
    init_fn = functools.partial(create_train_state, model, optimizer)
    abstract_state, shardings = partitioner.abstract_sharded(init_fn, jax.random.key(config.seed))
    return Job(config, partitioner, model, model_config, step_config, optimizer, abstract_state,
               shardings, init_fn)


def batch_train_flops(model_config: TransformerConfig, batch: dict[str, np.ndarray]) -> float:
    """Analytic FLOPs of one train step on `batch` (this process's rows), see vp_jax/flops.py.

    Matmuls count every position (padding is computed too); attention counts each packed
    example's allowed (query, key) pairs: its prefix fully, its output causally.
    """
    rows, length = batch['segment_ids'].shape
    matmuls = 6 * flops_lib.matmul_params_per_token(model_config) * rows * length
    pairs = 0
    for segments, prefix in zip(batch['segment_ids'], batch['prefix_mask']):
        for segment in np.unique(segments[segments > 0]):
            inside = segments == segment
            pairs += flops_lib.attended_pairs(int(inside.sum()), int(prefix[inside].sum()))
    per_pair = 3 * 4 * model_config.num_heads * model_config.head_dim * model_config.num_layers
    return float(matmuls + per_pair * pairs)


def log(message: str) -> None:
    """A line on process 0's stdout."""
    if jax.process_index() == 0:
        print(message, flush=True)


def with_workdir(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A copy with config.workdir set and data.shards_dir '' made <workdir>/shards (where the
    prepare-data stage writes)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.workdir = workdir
    if not config.data.shards_dir:
        config.data.shards_dir = os.path.join(workdir, 'shards')
    return config


@dataclasses.dataclass(frozen=True)
class DataDescription:
    """What the model must fit: vocabulary, token geometry, text width and length groups."""
    vocab: Any
    geometry: Any
    text_embedding_dim: int
    groups: tuple  # data_pipelines.mixtures.LengthGroup, longest first


def describe_shards(data_config: ml_collections.ConfigDict) -> DataDescription:
    """Reads only spec.json of config.data.shards_dir (no examples)."""
    from data_pipelines.seqio_tasks import ShardDataset

    dataset = ShardDataset.open(data_config.shards_dir)
    groups = length_groups(data_config, dataset.vocab, dataset.geometry)
    return DataDescription(dataset.vocab, dataset.geometry, dataset.text_embedding_dim, groups)


def length_groups(data_config, vocab, geometry) -> tuple:
    """The AGD length groups of config.data (owned by the input pipeline)."""
    from data_pipelines.input_pipeline import length_groups as input_length_groups

    return input_length_groups(data_config, vocab, geometry)


def resolve_for_data(config: ml_collections.ConfigDict, data: DataDescription) -> ml_collections.ConfigDict:
    """The config with the spec-derived model fields filled in, checked against the data."""
    return config_lib.resolve_config(config, data.vocab, data.geometry, data.text_embedding_dim,
                                     {group.name: group.length for group in data.groups})


def _initial_state(job: Job, checkpointer: Checkpointer, train_input) -> tuple[Any, int]:
    """Resume from the workdir, else init (with `init_from` params when set). -> (state, step)."""
    if checkpointer.latest_step() is not None:
        # The input restores its own per-process iterator states saved with the step.
        state, _ = checkpointer.restore(job.abstract_state, process_local=train_input)
        step = int(jax.device_get(state.step))
        log(f'[train] resumed from {checkpointer.directory} at step {step}')
        return state, step
    state, _ = job.partitioner.init_sharded(job.init_fn, jax.random.key(job.config.seed))
    if job.config.init_from:
        params = restore_params(job.config.init_from, job.abstract_state.params)
        state = state.replace(params=params)
        log(f'[train] parameters from {job.config.init_from}')
    return state, 0


def _raise_non_finite(step: int, metrics: dict, checkpointer: Checkpointer) -> None:
    if float(jax.device_get(metrics['non_finite'])) == 0.0:
        return
    sums = jax.device_get(metrics['sums'])
    checkpointer.wait_until_finished()
    last_good = checkpointer.latest_step()
    kept = (f'The last good checkpoint is step {last_good} in {checkpointer.directory}' if last_good is not None
            else f'No checkpoint was saved yet in {checkpointer.directory}')
    raise NonFiniteError(
        f'step {step}: the loss or the gradients are not finite (loss_sum={float(sums["loss_sum"])}, '
        f'grad_norm={float(jax.device_get(metrics["grad_norm"]))}); the update was not applied and '
        f'training stopped. {kept} (a non-finite state is never saved). Lower config.optimizer.lr, '
        'raise warmup_steps or grad clipping, or check the data.')


@jax.jit
def _add_sums(total, sums):
    return jax.tree.map(jnp.add, total, sums)


def eval_results_path(workdir: str, step: int, split: str) -> str:
    """Where `evaluate` writes the metrics of checkpoint `step` on `split`."""
    return os.path.join(workdir, EVAL_DIR, f'step_{step}_{split}.json')


def read_eval_results(workdir: str, step: int, split: str) -> dict[str, float] | None:
    """The metrics `evaluate` wrote for (step, split), or None when it has not run."""
    path = eval_results_path(workdir, step, split)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)['metrics']


def evaluate(job: Job, params, data_config, step: int, progress: Progress | None = None,
             workdir: str | None = None) -> dict[str, float]:
    """Teacher-forced loss/accuracy per task and modality on config.eval.split.

    Sums over every eval batch, then means (so tasks with more batches weigh more in the
    overall figures, exactly as the token counts say). With config.eval.conditioning_gain
    (default on) every batch is also scored with each example's conditioning taken from
    another example (features.mismatch_conditioning): 'task/<name>/conditioning_gain' is that
    loss minus the true loss, how much the model reads its caption / frames / audio.
    Written to <workdir>/eval/ when given.
    """
    from data_pipelines.input_pipeline import eval_batches  # TF/SeqIO: only when evaluating.

    cfg = job.config.eval
    with_gain = bool(cfg.get('conditioning_gain', True))
    eval_step = job.eval_step()
    totals, mismatched, batches, start = None, None, 0, time.perf_counter()
    for _, _, host_batch in eval_batches(data_config, cfg.split, cfg.batch_size, cfg.max_batches_per_task):
        sums = eval_step(params, job.partitioner.shard_host_batch(host_batch))
        totals = sums if totals is None else _add_sums(totals, sums)
        if with_gain:
            sums = eval_step(params, job.partitioner.shard_host_batch(mismatch_conditioning(host_batch)))
            mismatched = sums if mismatched is None else _add_sums(mismatched, sums)
        batches += 1
    if totals is None:
        raise ValueError(f'evaluation: split {cfg.split!r} of {data_config.shards_dir} gave no batches.')
    results = summarize_metrics(jax.device_get(totals), TASK_NAMES)
    if with_gain:
        other = summarize_metrics(jax.device_get(mismatched), TASK_NAMES)
        results.update({key.replace('/loss', '/conditioning_gain'): other[key] - value
                        for key, value in results.items() if key.startswith('task/') and key.endswith('/loss')})
    line = ' '.join(f'{k}={v:.4g}' for k, v in results.items() if '/' not in k)
    log(f'[eval] step {step} split={cfg.split} {batches} batches in {time.perf_counter() - start:.1f}s {line}')
    if progress is not None:
        progress.write_scalars(step, {f'eval/{k}': v for k, v in results.items()})
    if workdir is not None and jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, EVAL_DIR), exist_ok=True)
        with atomic_open(eval_results_path(workdir, step, cfg.split), 'w') as f:
            json.dump({'step': step, 'split': cfg.split, 'batches': batches, 'metrics': results}, f,
                      indent=2, sort_keys=True)
    return results


class _Window:
    """Train metrics summed over the steps since the last progress line."""

    def __init__(self):
        self.sums, self.flops, self.start = None, 0.0, None

    def add(self, sums, flops: float):
        self.sums = sums if self.sums is None else _add_sums(self.sums, sums)
        if self.start is None:
            # The first step of a run includes compilation: time starts after it.
            self.start = time.perf_counter()
        else:
            self.flops += flops

    def scalars(self, num_devices: int, peak_flops: float) -> dict[str, float]:
        now = time.perf_counter()
        out = {f'train/{k}': v for k, v in summarize_metrics(jax.device_get(self.sums), TASK_NAMES).items()}
        if self.start is not None and now > self.start:
            flops_per_device = self.flops / (now - self.start) / num_devices
            out['perf/tflops_per_device'] = flops_per_device / 1e12
            if peak_flops:
                out['perf/mfu'] = flops_per_device / peak_flops
        self.sums, self.flops, self.start = None, 0.0, now
        return out


def train(config: ml_collections.ConfigDict, workdir: str,
          on_step: Callable[[int, dict], None] | None = None) -> dict[int, dict[str, float]]:
    """Trains to config.train.num_steps (resuming from `workdir`); returns the logged scalars.

    Args:
      config: a validated job config (see vp_jax/config.py).
      workdir: checkpoints/, logs/, eval/ and the resolved config go here.
      on_step: called as on_step(step, metrics) after each step is dispatched (tests).
    Returns:
      {step: scalars} of every logged step (means over the log window).
    """
    from data_pipelines.input_pipeline import TrainInput  # TF/SeqIO: only when training.

    config = with_workdir(config, workdir)
    train_cfg, data_config = config.train, config.data
    config_lib.validate_config(config, jax.device_count())
    partitioner = make_partitioner(config)
    train_input = TrainInput(data_config, train_cfg.batch_size, config.seed, split='train',
                             total_steps=train_cfg.num_steps)
    config = resolve_for_data(config, DataDescription(
        train_input.vocab, train_input.geometry, train_input.text_embedding_dim, train_input.groups))
    if jax.process_index() == 0:
        config_lib.write_resolved_config(config, workdir)
    job = build_job(config, partitioner)

    checkpointer = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=train_cfg.max_to_keep,
                                save_interval_steps=train_cfg.checkpoint_every_steps,
                                async_save=train_cfg.async_checkpointing)
    state, first_step = _initial_state(job, checkpointer, train_input)
    train_step = jit_train_step(partitioner, make_train_step(job.model, job.optimizer, job.step_config),
                                job.state_shardings)
    schedule = make_schedule(config.optimizer, train_cfg.num_steps)
    progress = Progress(train_cfg.num_steps, os.path.join(workdir, LOG_DIR), 'train',
                        train_cfg.log_every_steps, first_step=first_step, items_name='tokens')
    log(f'[train] {jax.device_count()} devices, mesh {dict(partitioner.mesh.shape)}, '
        f'{sum(np.prod(x.shape) for x in jax.tree.leaves(job.abstract_state.params)):,} parameters, '
        f'groups {[(g.name, g.length) for g in train_input.groups]}, workdir {workdir}')

    rng = jax.random.key(config.seed)
    window, history, pending = _Window(), {}, None
    try:
        for step in range(first_step + 1, train_cfg.num_steps + 1):
            _, host_batch = train_input.next_batch()
            batch = partitioner.shard_host_batch(host_batch)
            state, metrics = train_step(state, batch, rng)
            if pending is not None:
                _raise_non_finite(*pending, checkpointer)
            pending = (step, metrics)
            window.add(metrics['sums'], batch_train_flops(job.model_config, host_batch) * jax.process_count())
            if on_step is not None:
                on_step(step, metrics)
            is_last = step == train_cfg.num_steps
            log_now = progress.should_log(step)
            save = is_last or step % train_cfg.checkpoint_every_steps == 0
            run_eval = step % train_cfg.eval_every_steps == 0
            if log_now or save or run_eval:
                _raise_non_finite(step, metrics, checkpointer)
            if save:
                checkpointer.save(step, state, {'data': train_input.state(), 'config': config.to_dict()},
                                  force=is_last, process_local=train_input)
            scalars = {}
            if log_now:
                scalars = window.scalars(jax.device_count(), train_cfg.get('peak_flops_per_device', 0.0))
                scalars['train/lr'] = float(schedule(step - 1))
                scalars['train/grad_norm'] = float(jax.device_get(metrics['grad_norm']))
                history[step] = scalars
            progress.update(step, scalars, items=host_batch['segment_ids'].size * jax.process_count(),
                            line_keys=LINE_KEYS)
            if run_eval:
                evaluate(job, state.params, data_config, step, progress, workdir)
    finally:
        checkpointer.close()
        progress.close()
        train_input.close()
    return history


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None
                        ) -> dict[str, float]:
    """--mode=eval: the parameters of <workdir>/checkpoints (latest or `step`) on config.eval.split."""
    config = with_workdir(config, workdir)
    config_lib.validate_config(config, jax.device_count())
    partitioner = make_partitioner(config)
    job = build_job(resolve_for_data(config, describe_shards(config.data)), partitioner)
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    with Checkpointer(directory) as checkpointer:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f'--mode=eval: no checkpoint in {directory}; train first.')
    params = restore_params(os.path.join(directory, str(step)), job.abstract_state.params)
    progress = Progress(1, os.path.join(workdir, LOG_DIR), 'eval')
    try:
        return evaluate(job, params, config.data, step, progress, workdir)
    finally:
        progress.close()
