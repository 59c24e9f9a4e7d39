"""Train state, the jitted train/eval steps, and their sharded/AOT compilation.

    partitioner = Partitioner(config.mesh_shape)
    init_fn = functools.partial(create_train_state, model, optimizer, text_length=...)
    state, state_shardings = partitioner.init_sharded(init_fn, rng)
    step = jit_train_step(partitioner, make_train_step(model, optimizer, step_config), state_shardings)
    state, metrics = step(state, partitioner.shard_host_batch(host_batch), rng)
    means = summarize_metrics(jax.device_get(metrics['sums']))          # vp_jax/losses.py

Gradient accumulation splits the [batch, length] batch into `num_microbatches` strided
slices (microbatch i holds rows i, i + n, i + 2n, ..., so every microbatch spans every
data shard), scans over them summing gradients of the weighted loss SUM, and divides once
by the total loss weight of the whole batch: the update equals the one-big-batch update.
A step whose loss or gradients are not finite leaves the state untouched and reports
`metrics['non_finite'] = 1`; the trainer then stops and keeps the last good checkpoint.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vp_jax.cpu_fusions import lm_compiler_options
from vp_jax.features import FEATURE_DTYPES, TEXT_EMBEDDINGS
from vp_jax.layers import constrain
from vp_jax.losses import cross_entropy_sums
from vp_jax.model import Transformer
from vp_jax.partitioning import Partitioner


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class TrainStepConfig:
    """Loss and accumulation settings of the step (from `config.train_step` or keywords)."""
    num_tasks: int = 1
    num_microbatches: int = 1
    z_loss_weight: float = 0.0
    task_loss_multipliers: tuple[float, ...] | None = None
    # Training-time augmentation of the conditioning, per task id (None: off): each bit of each
    # visual id inside an example's prefix flips with its task's probability (targets are never
    # touched). visual_range: the [low, high) ids of the LFQ codes, a power-of-two span.
    prefix_visual_bit_flip: tuple[float, ...] | None = None
    visual_range: tuple[int, int] = (0, 0)

    def __post_init__(self):
        if self.num_tasks < 1 or self.num_microbatches < 1:
            raise ValueError(f'train_step.num_tasks={self.num_tasks} and num_microbatches={self.num_microbatches} '
                             'must be >= 1.')
        if self.z_loss_weight < 0:
            raise ValueError(f'train_step.z_loss_weight={self.z_loss_weight}: expected >= 0.')
        if self.task_loss_multipliers is not None:
            object.__setattr__(self, 'task_loss_multipliers', tuple(float(m) for m in self.task_loss_multipliers))
            if len(self.task_loss_multipliers) != self.num_tasks:
                raise ValueError(f'train_step.task_loss_multipliers has {len(self.task_loss_multipliers)} entries; '
                                 f'expected num_tasks={self.num_tasks}.')
        if self.prefix_visual_bit_flip is not None:
            rates = tuple(float(r) for r in self.prefix_visual_bit_flip)
            object.__setattr__(self, 'prefix_visual_bit_flip', rates if any(rates) else None)
            if len(rates) != self.num_tasks:
                raise ValueError(f'train_step.prefix_visual_bit_flip has {len(rates)} entries; '
                                 f'expected num_tasks={self.num_tasks}.')
            if not all(0.0 <= r < 1.0 for r in rates):
                raise ValueError(f'train.prefix_visual_bit_flip={rates}: expected values in [0, 1).')
        object.__setattr__(self, 'visual_range', tuple(int(v) for v in self.visual_range))
        span = self.visual_range[1] - self.visual_range[0]
        if self.prefix_visual_bit_flip and (span < 2 or span & (span - 1)):
            raise ValueError(f'train.prefix_visual_bit_flip needs the visual ids as a power-of-two span; '
                             f'got visual_range={self.visual_range}.')

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict) -> 'TrainStepConfig':
        values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'config.train_step has unknown fields {unknown}; known: {sorted(known)}.')
        return cls(**values)


def init_batch(batch_size: int = 1, length: int = 8, text_length: int = 0,
               text_embedding_dim: int = 0) -> dict[str, jax.Array]:
    """An all-zero batch of the feature contract (one segment); enough to create parameters."""
    batch = {key: jnp.zeros((batch_size, length), dtype) for key, dtype in FEATURE_DTYPES.items()}
    batch['segment_ids'] = jnp.ones((batch_size, length), jnp.int32)
    if text_embedding_dim:
        batch[TEXT_EMBEDDINGS] = jnp.zeros((batch_size, max(text_length, 1), text_embedding_dim), jnp.float32)
    return batch


def create_train_state(model: Transformer, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh state with logically-boxed params and optimizer state (feed to Partitioner.init_sharded)."""
    params = model.init({'params': rng}, init_batch(text_embedding_dim=model.config.text_embedding_dim))['params']
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=optimizer.init(params))


def _split_microbatches(batch: Mapping[str, jax.Array], num_microbatches: int) -> dict[str, jax.Array]:
    """[batch, ...] -> [num_microbatches, batch / num_microbatches, ...], strided rows."""
    rows = next(iter(batch.values())).shape[0]
    if rows % num_microbatches:
        raise ValueError(f'batch of {rows} rows is not divisible by train_step.num_microbatches={num_microbatches}.')

    def split(x):
        x = x.reshape(rows // num_microbatches, num_microbatches, *x.shape[1:]).swapaxes(0, 1)
        return constrain(x, (None, 'batch') + (None,) * (x.ndim - 2))

    return {key: split(value) for key, value in batch.items()}


def _sums_fn(model: Transformer, step_config: TrainStepConfig) -> Callable:
    multipliers = None if step_config.task_loss_multipliers is None else jnp.asarray(step_config.task_loss_multipliers)

    def sums(params, batch, rng, deterministic):
        logits = model.apply({'params': params}, batch, deterministic=deterministic, rngs={'dropout': rng})
        objective_sum, sums = cross_entropy_sums(logits, batch, step_config.num_tasks, multipliers,
                                                 step_config.z_loss_weight)
        return objective_sum, {**sums, 'objective_sum': objective_sum}

    return sums


def flip_prefix_visual_bits(batch: Mapping[str, jax.Array], rng: jax.Array, rates: Sequence[float],
                            visual_range: tuple[int, int]) -> dict[str, jax.Array]:
    """`batch` with each bit of each visual id in the prefix flipped with probability
    `rates[task id]` of the token's task.

    A visual id is an LFQ code: its bits are the signs of the latent channels, so a flipped
    bit is a nearby latent, the kind of change an unseen drawing of the same thing makes.
    """
    low, high = visual_range
    bits = (high - low).bit_length() - 1
    tokens = batch['input_tokens']
    rate = jnp.asarray(rates, jnp.float32)[batch['task_ids']]
    flips = (jax.random.uniform(rng, tokens.shape + (bits,)) < rate[..., None]).astype(tokens.dtype)
    xor = jnp.sum(flips << jnp.arange(bits, dtype=tokens.dtype), axis=-1)
    inside = (batch['prefix_mask'] == 1) & (tokens >= low) & (tokens < high)
    return {**batch, 'input_tokens': jnp.where(inside, low + jnp.bitwise_xor(tokens - low, xor), tokens)}


def make_train_step(model: Transformer, optimizer: optax.GradientTransformation,
                    step_config: TrainStepConfig | Mapping[str, Any]) -> Callable:
    """Returns step(state, batch, rng) -> (state, metrics).

    metrics: {'sums': cross_entropy_sums' sums over the whole batch plus 'objective_sum',
    'objective': the
    normalised objective, 'grad_norm', 'non_finite' (1.0 when the update was skipped)}.
    """
    if not isinstance(step_config, TrainStepConfig):
        step_config = TrainStepConfig.from_config(step_config)
    sums_fn = _sums_fn(model, step_config)
    grad_fn = jax.grad(sums_fn, has_aux=True)
    deterministic = model.config.dropout_rate == 0.0
    n = step_config.num_microbatches

    def step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        if step_config.prefix_visual_bit_flip:
            flip_rng, rng = jax.random.split(rng)
            batch = flip_prefix_visual_bits(batch, flip_rng, step_config.prefix_visual_bit_flip,
                                            step_config.visual_range)
        if n == 1:
            grads, sums = grad_fn(state.params, batch, rng, deterministic)
        else:
            def accumulate(carry, micro):
                index, microbatch = micro
                grads, sums = grad_fn(state.params, microbatch, jax.random.fold_in(rng, index), deterministic)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zero_grads = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            zero_sums = jax.eval_shape(lambda: sums_fn(state.params, jax.tree.map(lambda x: x[:1], batch), rng,
                                                       True)[1])
            zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_sums)
            micro = (jnp.arange(n), _split_microbatches(batch, n))
            (grads, sums), _ = jax.lax.scan(accumulate, (zero_grads, zero_sums), micro)

        total_weight = jnp.maximum(sums['weight_sum'], 1.0)
        grads = jax.tree.map(lambda g, p: (g / total_weight).astype(p.dtype), grads, state.params)
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=new_opt_state)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums['loss_sum'])
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        metrics = {'sums': sums, 'objective': sums['objective_sum'] / total_weight, 'grad_norm': grad_norm,
                   'non_finite': 1.0 - finite.astype(jnp.float32)}
        return new_state, metrics

    return step


def make_eval_step(model: Transformer, step_config: TrainStepConfig | Mapping[str, Any]) -> Callable:
    """Returns eval(params, batch) -> sums (see cross_entropy_sums); dropout off."""
    if not isinstance(step_config, TrainStepConfig):
        step_config = TrainStepConfig.from_config(step_config)
    sums_fn = _sums_fn(model, step_config)
    return lambda params, batch: sums_fn(params, batch, jax.random.key(0), True)[1]


def jit_train_step(partitioner: Partitioner, train_step: Callable, state_shardings: Any) -> Callable:
    """jax.jit of `train_step` with state/batch/rng shardings, the state donated, and on CPU
    XLA's YNNPACK fusions (vp_jax/cpu_fusions.py).

    Tracing happens inside `partitioner.activate()`, so the model's logical activation
    constraints bind to this mesh. `.lower(state, batch, rng).compile()` on the result gives
    the AOT path (see `compile_train_step`).
    """
    def traced(state, batch, rng):
        with partitioner.activate():
            return train_step(state, batch, rng)

    return jax.jit(traced, in_shardings=(state_shardings, partitioner.data_sharding, partitioner.replicated),
                   out_shardings=(state_shardings, partitioner.replicated), donate_argnums=(0,),
                   compiler_options=lm_compiler_options(partitioner.mesh))


def jit_eval_step(partitioner: Partitioner, eval_step: Callable, params_shardings: Any) -> Callable:
    def traced(params, batch):
        with partitioner.activate():
            return eval_step(params, batch)

    return jax.jit(traced, in_shardings=(params_shardings, partitioner.data_sharding),
                   out_shardings=partitioner.replicated, compiler_options=lm_compiler_options(partitioner.mesh))


def batch_spec(partitioner: Partitioner, batch_size: int, length: int, text_length: int = 0,
               text_embedding_dim: int = 0) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract global batch (shapes, dtypes, shardings) for AOT compilation."""
    batch = jax.eval_shape(lambda: init_batch(batch_size, length, text_length, text_embedding_dim))
    return {key: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=partitioner.data_sharding)
            for key, value in batch.items()}


def compile_train_step(jitted_step: Callable, abstract_state: Any, abstract_batch: Mapping[str, Any],
                       partitioner: Partitioner) -> jax.stages.Compiled:
    """Ahead-of-time compile; the result's memory_analysis()/cost_analysis() describe the step."""
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=partitioner.replicated)
    with partitioner.activate():
        return jitted_step.lower(abstract_state, abstract_batch, rng).compile()
