"""The LM job's config: loading, start-up validation, resolution against the data, saving.

A job config is an ml_collections ConfigDict from `experiments/<name>.py:get_config(arg)`
with these sections (experiments/t2v_base.py is the reference):

  workdir    where checkpoints, logs, eval results and the resolved config go ('' = default)
  seed       one integer that fixes init, data order and dropout
  model      vp_jax.model_config.TransformerConfig fields; vocab_size=-1 and
             text_embedding_dim=-1 mean "take them from the shard spec", visual_grid=(-1, -1)
             the data's latent grid (visual_range always comes from the vocabulary)
  data       the SeqIO input (data_pipelines.input_pipeline owns these fields)
  optimizer  vp_jax.optimizer fields
  train      batch_size (global), num_steps, microbatches, log_every_steps,
             eval_every_steps, checkpoint_every_steps, max_to_keep, async_checkpointing,
             task_loss_multipliers {task: float}, z_loss_weight, peak_flops_per_device (MFU),
             prefix_visual_bit_flip and prefix_visual_bit_flip_tasks (augments the prefix's
             visual ids of those comma-separated tasks, '' = every task; vp_jax/train_step.py)
  eval       split, batch_size, max_batches_per_task
  mesh       data, fsdp, tensor (-1 auto-fills one), logical_axis_rules, max_replicated_fraction
  init_from  a checkpoint to take the parameters from (finetuning), '' for none
  compile    (optional) token shapes and TPU topology for --mode=compile (vp_jax/aot_compile.py)

`config_errors` lists every problem at once, each naming the field, the value and what was
expected; `validate_config` raises `ConfigError` with that list before anything expensive
starts. `resolve_config` fills the -1 fields from the shard spec and checks the data fits
the model (every task's sequence within model.max_length).
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from vp_jax import tasks as tasks_lib
from vp_jax.model_config import TransformerConfig
from vp_jax.optimizer import optimizer_config_errors
from vp_jax.partitioning import BATCH_MESH_AXES, MESH_AXES, normalize_rules, resolve_mesh_shape
from vp_jax.files import atomic_open

RESOLVED_CONFIG_JSON = 'config.json'
RESOLVED_CONFIG_TEXT = 'config.txt'
SECTIONS = ('workdir', 'seed', 'model', 'data', 'optimizer', 'train', 'eval', 'mesh', 'init_from')
_SPEC_FIELDS = ('vocab_size', 'text_embedding_dim')  # -1 = from the shard spec
_TRAIN_POSITIVE = ('batch_size', 'num_steps', 'microbatches', 'log_every_steps', 'eval_every_steps',
                   'checkpoint_every_steps', 'max_to_keep')


class ConfigError(ValueError):
    """The config cannot run; the message lists every problem found."""

    def __init__(self, errors: Sequence[str]):
        self.errors = list(errors)
        super().__init__('Invalid config:\n  ' + '\n  '.join(self.errors))


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file; `path` may carry the variant as 'file.py:arg'."""
    if arg is None and ':' in os.path.basename(path):
        path, arg = path.rsplit(':', 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist.')
    spec = importlib.util.spec_from_file_location(
        f'vp_jax_config_{os.path.splitext(os.path.basename(path))[0]}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
        raise ValueError(f'config file {path} has no get_config(arg=None) function.')
    return module.get_config(arg) if arg is not None else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """In-place `{'train.num_steps': 10}` overrides (as `--config.train.num_steps=10` does)."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split('.')
        for name in parents:
            if name not in node:
                raise KeyError(f'config override {dotted!r}: no section {name!r}.')
            node = node[name]
        if leaf not in node:
            raise KeyError(f'config override {dotted!r}: no field {leaf!r} in that section; '
                           f'have {sorted(node.keys())}.')
        node[leaf] = value


def mesh_shape(config: ml_collections.ConfigDict) -> dict[str, int]:
    return {axis: int(config.mesh[axis]) for axis in MESH_AXES}


def _model_errors(config) -> list[str]:
    model = config.model.to_dict()
    for name in _SPEC_FIELDS:
        if model.get(name) == -1:
            model[name] = 2  # Filled from the shard spec later; any valid value checks the rest.
    if tuple(model.get('visual_grid') or ()) == (-1, -1):
        model['visual_grid'] = (1, 1)
    if tuple(model.get('visual_grid') or ()) not in ((), (0, 0)) or model.get('visual_bit_embedding'):
        model['visual_range'] = (0, 2)  # Filled from the vocabulary later.
    try:
        TransformerConfig.from_config(model)
    except ValueError as e:
        return [str(e)]
    return []


def _eval_errors(config) -> list[str]:
    errors = []
    for name in ('batch_size', 'max_batches_per_task'):
        value = config.eval.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(f'config.eval.{name}={value!r}: expected a positive integer.')
    if not isinstance(config.eval.get('split'), str) or not config.eval.split:
        errors.append(f'config.eval.split={config.eval.get("split")!r}: expected a split name such as '
                      "'validation'.")
    return errors


def _train_errors(config, num_devices: int | None) -> list[str]:
    train, errors = config.train, []
    for name in _TRAIN_POSITIVE:
        value = train.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(f'config.train.{name}={value!r}: expected a positive integer.')
    if errors:
        return errors
    if train.batch_size % train.microbatches:
        errors.append(f'config.train.batch_size={train.batch_size} is not divisible by '
                      f'config.train.microbatches={train.microbatches}.')
    known_tasks = set(config.data.get('tasks', {}) or {})

    def task_name_errors(field: str, task: str) -> list[str]:
        if task not in tasks_lib.TASKS_BY_NAME:
            return [f'config.train.{field}: unknown task {task!r}; known tasks: {", ".join(tasks_lib.TASKS_BY_NAME)}.']
        if known_tasks and task not in known_tasks:
            return [f'config.train.{field}: task {task!r} is not in config.data.tasks {sorted(known_tasks)}.']
        return []

    for task, multiplier in (train.get('task_loss_multipliers') or {}).items():
        errors += task_name_errors('task_loss_multipliers', task)
        if not isinstance(multiplier, (int, float)) or multiplier < 0:
            errors.append(f'config.train.task_loss_multipliers[{task!r}]={multiplier!r}: expected a number >= 0.')
    if train.get('z_loss_weight', 0.0) < 0:
        errors.append(f'config.train.z_loss_weight={train.z_loss_weight}: expected >= 0.')
    if not 0.0 <= train.get('prefix_visual_bit_flip', 0.0) < 1.0:
        errors.append(f'config.train.prefix_visual_bit_flip={train.prefix_visual_bit_flip}: expected a value in [0, 1).')
    for task in _names(train.get('prefix_visual_bit_flip_tasks', '')):
        errors += task_name_errors('prefix_visual_bit_flip_tasks', task)
    try:
        shape = resolve_mesh_shape(mesh_shape(config), num_devices) if num_devices else None
    except ValueError as e:
        return errors + [f'config.mesh: {e}']
    if shape:
        shards = shape[BATCH_MESH_AXES[0]] * shape[BATCH_MESH_AXES[1]]
        per_microbatch = train.batch_size // train.microbatches
        if per_microbatch % shards:
            errors.append(
                f'config.train.batch_size={train.batch_size} with microbatches={train.microbatches} gives '
                f'{per_microbatch} rows per microbatch, not divisible by the {shards} batch shards '
                f'(mesh data*fsdp = {shape["data"]}*{shape["fsdp"]} on {num_devices} devices).')
        if isinstance(config.eval.get('batch_size'), int) and config.eval.batch_size % shards:
            errors.append(f'config.eval.batch_size={config.eval.batch_size} is not divisible by the '
                          f'{shards} batch shards (mesh data*fsdp).')
    return errors


def _mesh_errors(config) -> list[str]:
    errors = []
    unknown = sorted(set(config.mesh.keys()) - set(MESH_AXES) - {'logical_axis_rules', 'max_replicated_fraction'})
    if unknown:
        errors.append(f'config.mesh has unknown fields {unknown}; expected {list(MESH_AXES)}, '
                      'logical_axis_rules, max_replicated_fraction.')
    try:
        normalize_rules(config.mesh.logical_axis_rules)
    except (ValueError, TypeError) as e:
        errors.append(f'config.mesh.{e}')
    fraction = config.mesh.get('max_replicated_fraction', 0.1)
    if not 0 <= fraction <= 1:
        errors.append(f'config.mesh.max_replicated_fraction={fraction}: expected a value in [0, 1].')
    return errors


def _data_errors(config, check_shards: bool) -> list[str]:
    errors = []
    for task, rate in (config.data.get('tasks') or {}).items():
        if task not in tasks_lib.TASKS_BY_NAME:
            errors.append(f'config.data.tasks: unknown task {task!r}; known tasks: '
                          f'{", ".join(tasks_lib.TASKS_BY_NAME)}.')
        elif not isinstance(rate, (int, float)) or rate < 0:
            errors.append(f'config.data.tasks[{task!r}]={rate!r}: expected a rate >= 0.')
    if errors:
        return errors
    from data_pipelines.input_pipeline import validate_data_config  # Imports TF/SeqIO: lazily.
    return list(validate_data_config(config.data, check_shards=check_shards))


def config_errors(config: ml_collections.ConfigDict, num_devices: int | None = None,
                  check_shards: bool = True) -> list[str]:
    """Every problem with `config` that can be found without reading examples.

    `num_devices` (e.g. `jax.device_count()`) enables the mesh and batch-divisibility checks;
    `check_shards` opens config.data.shards_dir's spec.json and checks the tasks' fields.
    """
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        return [f'config is missing sections {missing}; expected {list(SECTIONS)}.']
    errors = []
    if not isinstance(config.seed, int) or isinstance(config.seed, bool):
        errors.append(f'config.seed={config.seed!r}: expected an integer.')
    errors += _model_errors(config)
    errors += optimizer_config_errors(config.optimizer, config.train.get('num_steps', 0) or 0)
    errors += _train_errors(config, num_devices)
    errors += _eval_errors(config)
    errors += _mesh_errors(config)
    errors += _data_errors(config, check_shards)
    if config.init_from and not os.path.exists(os.path.expanduser(config.init_from)):
        errors.append(f'config.init_from={config.init_from!r}: no such checkpoint directory.')
    return errors


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None = None,
                    check_shards: bool = True) -> None:
    errors = config_errors(config, num_devices, check_shards)
    if errors:
        raise ConfigError(errors)


def resolve_config(config: ml_collections.ConfigDict, vocab, geometry, text_embedding_dim: int,
                   group_lengths: Mapping[str, int]) -> ml_collections.ConfigDict:
    """A copy with the spec-derived model fields filled, checked against the data.

    Args:
      vocab: the data's vp_jax.vocabulary.Vocabulary; model.vocab_size=-1 becomes its
        padded_size, an explicit vocab_size must be at least vocab.size; model.visual_range
        becomes its visual ids (read by the grid and bit embeddings and the train step's bit flips).
      geometry: the data's tasks.Geometry (the per-task sequence lengths; model.visual_grid
        (-1, -1) becomes its latent (h, w)).
      text_embedding_dim: width of the data's text embeddings (0 in text-token mode).
      group_lengths: {length group name: padded sequence length} of the input pipeline.
    """
    resolved = ml_collections.ConfigDict(config.to_dict())
    model, errors = resolved.model, []
    if model.vocab_size == -1:
        model.vocab_size = vocab.padded_size
    elif model.vocab_size < vocab.size:
        errors.append(f'config.model.vocab_size={model.vocab_size} is smaller than the data vocabulary '
                      f'({vocab.size} ids; use -1 to take {vocab.padded_size} from the shard spec).')
    if model.text_embedding_dim == -1:
        model.text_embedding_dim = int(text_embedding_dim)
    elif model.text_embedding_dim != text_embedding_dim:
        errors.append(f'config.model.text_embedding_dim={model.text_embedding_dim} but the shards carry '
                      f'text embeddings of width {text_embedding_dim} (use -1 to take it from the spec).')
    if tuple(model.get('visual_grid', (0, 0))) == (-1, -1):
        model.visual_grid = tuple(int(v) for v in geometry.video_latent_shape[1:])
    model.visual_range = tuple(int(v) for v in vocab.visual_range)
    for task in (config.data.get('tasks') or {}):
        length = tasks_lib.model_length(tasks_lib.get_task(task), geometry, vocab)
        if length > model.max_length:
            errors.append(f'config.model.max_length={model.max_length}: task {task!r} needs {length} '
                          'positions per example on this data.')
    for group, length in group_lengths.items():
        if length > model.max_length:
            errors.append(f'config.model.max_length={model.max_length}: length group {group!r} has '
                          f'sequences of {length} positions.')
    if errors:
        raise ConfigError(errors)
    return resolved


def task_loss_multipliers(config: ml_collections.ConfigDict) -> list[float]:
    """[NUM_TASKS] multipliers indexed by task id, 1.0 where the config gives none."""
    given = dict(config.train.get('task_loss_multipliers') or {})
    return [float(given.get(task.name, 1.0)) for task in tasks_lib.TASKS]


def _names(text: str) -> list[str]:
    """'a, b' -> ['a', 'b'] (a comma-separated list, as a command line gives it)."""
    return [name.strip() for name in text.split(',') if name.strip()]


def prefix_visual_bit_flip_rates(config: ml_collections.ConfigDict) -> list[float]:
    """[NUM_TASKS] bit-flip probabilities indexed by task id: train.prefix_visual_bit_flip for
    the tasks named in train.prefix_visual_bit_flip_tasks, comma-separated (every task when it
    is empty), 0 elsewhere."""
    rate = float(config.train.get('prefix_visual_bit_flip', 0.0))
    chosen = set(_names(config.train.get('prefix_visual_bit_flip_tasks', '')))
    return [rate if not chosen or task.name in chosen else 0.0 for task in tasks_lib.TASKS]


def default_workdir(config_path: str) -> str:
    """~/vp_jax_runs/<config file name>."""
    name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0] or 'run'
    return os.path.join(os.path.expanduser('~'), 'vp_jax_runs', name)


def write_resolved_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes config.json (machine-readable) and config.txt (human-readable) to `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, RESOLVED_CONFIG_JSON)
    with atomic_open(path) as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=list)
    with open(os.path.join(workdir, RESOLVED_CONFIG_TEXT), 'w') as f:
        f.write(str(config))
    return path


def read_resolved_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, RESOLVED_CONFIG_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f'no resolved config at {path}.')
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
