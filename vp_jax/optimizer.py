"""The optimizer from `config.optimizer`: AdamW with warm-up + decay and gradient clipping.

    optimizer = make_optimizer(config.optimizer, total_steps=config.train.num_steps)
    schedule = make_schedule(config.optimizer, total_steps)   # step -> learning rate (for logs)

Fields of `config.optimizer` (see `default_optimizer_config`):
  name            'adamw' (decoupled weight decay) or 'adam' (no decay)
  lr              peak learning rate, reached at the end of warm-up
  b1, b2, eps     Adam moments
  weight_decay    decoupled weight decay, applied to weight matrices and embeddings only:
                  norm scales and biases are excluded by name ('scale', '*bias'), because
                  with scanned layers they are 2-D ([layers, features]) and a rank test would
                  wrongly decay them
  warmup_steps    linear warm-up from 0 to lr
  schedule        'cosine' (to min_lr_ratio * lr at total_steps), 'rsqrt' (lr * sqrt(warmup /
                  step) after warm-up, floored at min_lr_ratio * lr), or 'constant'
  min_lr_ratio    the floor of the decay, as a fraction of lr
  grad_clip_norm  clip gradients to this global norm; 0 disables clipping

Gradient accumulation lives in the train step (vp_jax/train_step.py), not here, so the
optimizer always sees the exactly-normalised gradient of the whole batch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('adamw', 'adam')
SCHEDULES = ('cosine', 'rsqrt', 'constant')
_FIELDS = ('name', 'lr', 'b1', 'b2', 'eps', 'weight_decay', 'warmup_steps', 'schedule',
           'min_lr_ratio', 'grad_clip_norm')


def default_optimizer_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name='adamw', lr=3e-4, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01, warmup_steps=100,
        schedule='cosine', min_lr_ratio=0.1, grad_clip_norm=1.0))


def optimizer_config_errors(config: Mapping[str, Any], total_steps: int) -> list[str]:
    """Every problem with `config.optimizer`, each naming the field, value and expectation."""
    errors = []
    missing = [f for f in _FIELDS if f not in config]
    unknown = sorted(set(config) - set(_FIELDS))
    if missing:
        errors.append(f'config.optimizer is missing fields {missing}.')
    if unknown:
        errors.append(f'config.optimizer has unknown fields {unknown}; known: {list(_FIELDS)}.')
    if missing:
        return errors
    if config['name'] not in OPTIMIZERS:
        errors.append(f'config.optimizer.name={config["name"]!r}: expected one of {OPTIMIZERS}.')
    if config['name'] == 'adam' and config['weight_decay'] > 0:
        errors.append(f'config.optimizer.weight_decay={config["weight_decay"]} with name=\'adam\': '
                      "use name='adamw' for weight decay, or set weight_decay=0.")
    if config['schedule'] not in SCHEDULES:
        errors.append(f'config.optimizer.schedule={config["schedule"]!r}: expected one of {SCHEDULES}.')
    if not config['lr'] > 0:
        errors.append(f'config.optimizer.lr={config["lr"]}: expected > 0.')
    for name in ('b1', 'b2'):
        if not 0 <= config[name] < 1:
            errors.append(f'config.optimizer.{name}={config[name]}: expected a value in [0, 1).')
    if not config['eps'] > 0:
        errors.append(f'config.optimizer.eps={config["eps"]}: expected > 0.')
    for name in ('weight_decay', 'grad_clip_norm'):
        if config[name] < 0:
            errors.append(f'config.optimizer.{name}={config[name]}: expected >= 0 (0 disables it).')
    if not 0 <= config['min_lr_ratio'] <= 1:
        errors.append(f'config.optimizer.min_lr_ratio={config["min_lr_ratio"]}: expected a value in [0, 1].')
    warmup = config['warmup_steps']
    if not isinstance(warmup, int) or warmup < 0:
        errors.append(f'config.optimizer.warmup_steps={warmup!r}: expected an integer >= 0.')
    elif config['schedule'] == 'cosine' and warmup >= total_steps > 0:
        errors.append(f'config.optimizer.warmup_steps={warmup} must be smaller than '
                      f'config.train.num_steps={total_steps} for the cosine schedule.')
    return errors


def _check(config: Mapping[str, Any], total_steps: int) -> None:
    errors = optimizer_config_errors(config, total_steps)
    if errors:
        raise ValueError('Invalid optimizer config:\n  ' + '\n  '.join(errors))


def make_schedule(config: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the (0-based) optimizer step."""
    _check(config, total_steps)
    lr, warmup = float(config['lr']), int(config['warmup_steps'])
    floor = lr * float(config['min_lr_ratio'])
    if config['schedule'] == 'cosine':
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=floor)
    if config['schedule'] == 'constant':
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])

    def rsqrt(step):
        step = jnp.asarray(step, jnp.float32)
        warming = lr * step / max(warmup, 1)
        decayed = lr * jnp.sqrt(max(warmup, 1) / jnp.maximum(step, 1.0))
        return jnp.where(step < warmup, warming, jnp.maximum(decayed, floor))

    return rsqrt


def weight_decay_mask(params) -> Any:
    """True for leaves that get weight decay: not norm scales, not biases."""
    def decays(path, _):
        name = str(getattr(path[-1], 'key', path[-1]))
        return not (name == 'scale' or name.endswith('bias'))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
    """Clipping (optional) followed by Adam/AdamW with the configured schedule."""
    schedule = make_schedule(config, total_steps)
    parts = []
    if config['grad_clip_norm'] > 0:
        parts.append(optax.clip_by_global_norm(float(config['grad_clip_norm'])))
    if config['name'] == 'adamw':
        parts.append(optax.adamw(schedule, b1=config['b1'], b2=config['b2'], eps=config['eps'],
                                 weight_decay=float(config['weight_decay']), mask=weight_decay_mask))
    else:
        parts.append(optax.adam(schedule, b1=config['b1'], b2=config['b2'], eps=config['eps']))
    return optax.chain(*parts)
