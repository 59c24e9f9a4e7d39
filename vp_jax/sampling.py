"""Autoregressive sampling: one bidirectional prefill, then a KV-cached decode loop.

VideoPoet generates the output span token by token after reading the whole prefix at once
(paper sections 3 and 7). `Sampler.sample` does exactly that inside ONE jitted program:

  1. prefill: the prefix batch [batch, prefix_length] runs with the training mask
     (bidirectional among prefix tokens) and fills a KV cache of capacity
     prefix_length + output_length - 1;
  2. a `lax.while_loop` picks output token j from the logits of the previous position and
     feeds it through `Transformer.decode_step` ([batch, 1] per step).

Each output position j has a rule from `vp_jax.tasks.output_constraints` (forced, low, high),
int32 [output_length]: where forced[j] >= 0 the layout fixes a marker and it is emitted as is;
elsewhere only ids in [low[j], high[j]) may be drawn (the visual range inside a video span,
the right RVQ level's block inside an audio span), so a sample never leaks ids of another
modality.

Per-step logit processing, in this order (all float32 [batch, vocab]):
  classifier-free guidance  logits = uncond + scale * (cond - uncond); the unconditional
                            (null or negative prompt) rows are batched with the conditional
                            ones: the model runs on [2 * batch, ...].
  repetition safeguard      ids drawn in the last `repetition_window` outputs of the row lose
                            `repetition_penalty` logits (decoding collapse repeats tokens).
  legal-range restriction   ids outside [low[j], high[j]) get -inf.
  temperature, top-k, top-p temperature 0 is greedy (argmax).

Prefix rows may have different lengths (captions differ, the null prompt drops the text):
rows are right-padded with segment id 0, which attends to nothing and is never attended,
and each row's outputs take RoPE positions from its own prefix length, so a padded row
computes exactly what it would alone.

`use_cache=False` is the reference the cache is checked and benchmarked against: every
step re-runs the model over the whole [batch, prefix_length + output_length - 1] buffer.

Usage:
    sampler = Sampler(model, partitioner)
    prefix = prefix_batch([inputs_0, inputs_1], task, vocab)       # numpy features
    out = sampler.sample(params, prefix, output_constraints(task, geometry, vocab),
                         jax.random.key(0), SamplingOptions(temperature=1.0, top_k=64))
    # out: int32 [batch, output_length] vocabulary ids
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.attention import kv_cache_logical_axes
from vp_jax.features import TEXT_EMBEDDINGS, example_features, stack_features
from vp_jax.model import MODEL_INPUTS, Transformer, validate_batch
from vp_jax.model_config import TransformerConfig
from vp_jax.partitioning import Partitioner
from vp_jax.tasks import TaskSpec
from vp_jax.vocabulary import Vocabulary

PREFIX_FEATURES = MODEL_INPUTS


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """How each output token is drawn (hashable: one compiled program per distinct value).

    temperature: 0 means greedy; top_k: 0 means off; top_p: 1.0 means off;
    guidance_scale: classifier-free guidance weight, used when an unconditional prefix is given
    (1.0 reproduces the conditional logits); repetition_penalty / repetition_window: the
    decoding-collapse safeguard (0 / 0 means off).
    """
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance_scale: float = 1.0
    repetition_penalty: float = 0.0
    repetition_window: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f'SamplingOptions.temperature={self.temperature}: expected >= 0 (0 = greedy).')
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f'SamplingOptions.top_k={self.top_k!r}: expected an integer >= 0 (0 = off).')
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f'SamplingOptions.top_p={self.top_p}: expected a value in (0, 1].')
        if not self.guidance_scale >= 0:
            raise ValueError(f'SamplingOptions.guidance_scale={self.guidance_scale}: expected >= 0.')
        if self.repetition_penalty < 0 or not isinstance(self.repetition_window, int) or self.repetition_window < 0:
            raise ValueError(f'SamplingOptions.repetition_penalty={self.repetition_penalty} and '
                             f'repetition_window={self.repetition_window!r}: expected both >= 0.')


def prefix_batch(inputs: Sequence[np.ndarray], task: TaskSpec, vocab: Vocabulary,
                 text_embeddings: np.ndarray | None = None, length: int | None = None) -> dict[str, np.ndarray]:
    """Model features of prefixes only (no targets), right-padded to a common length.

    inputs: per row, the int32 prefix ids from `tasks.build_sequence`. text_embeddings:
    float32 [batch, text_length, dim] in T5 text mode. Returns the MODEL_INPUTS features
    [batch, length] (+ text_embeddings).
    """
    if not inputs:
        raise ValueError('prefix_batch needs at least one prefix.')
    length = max(len(x) for x in inputs) if length is None else length
    rows = [example_features(x, np.zeros([0], np.int32), task.index, vocab, length=length) for x in inputs]
    batch = {k: v for k, v in stack_features(rows).items() if k in PREFIX_FEATURES}
    if text_embeddings is not None:
        text_embeddings = np.asarray(text_embeddings, np.float32)
        if text_embeddings.ndim != 3 or text_embeddings.shape[0] != len(inputs):
            raise ValueError(f'text_embeddings has shape {text_embeddings.shape}; expected '
                             f'[batch={len(inputs)}, text_length, dim].')
        batch[TEXT_EMBEDDINGS] = text_embeddings
    return batch


def concat_prefixes(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacks two prefix batches along the batch, right-padding the shorter one with zeros."""
    if set(a) != set(b):
        raise ValueError(f'prefix batches have different features: {sorted(a)} vs {sorted(b)}.')
    length = max(a['input_tokens'].shape[1], b['input_tokens'].shape[1])

    def pad(x, key):
        if key == TEXT_EMBEDDINGS:
            return x
        return np.pad(x, [(0, 0), (0, length - x.shape[1])])

    return {k: np.concatenate([pad(a[k], k), pad(b[k], k)]) for k in a}


def _check_constraints(constraints, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    forced, low, high = (np.asarray(c, np.int32) for c in constraints)
    if not (forced.ndim == low.ndim == high.ndim == 1 and forced.shape == low.shape == high.shape):
        raise ValueError(f'output constraints must be three int32 [output_length] arrays; got shapes '
                         f'{forced.shape}, {low.shape}, {high.shape}.')
    if forced.size == 0:
        raise ValueError('output constraints are empty: nothing to sample.')
    free = forced < 0
    if forced.max() >= vocab_size:
        raise ValueError(f'a forced id {forced.max()} is outside the vocabulary [0, {vocab_size}).')
    if np.any(free & ((low < 0) | (high > vocab_size) | (low >= high))):
        j = int(np.argmax(free & ((low < 0) | (high > vocab_size) | (low >= high))))
        raise ValueError(f'output position {j} has an empty or out-of-vocabulary legal range '
                         f'[{low[j]}, {high[j]}) for vocab_size {vocab_size}.')
    return forced, low, high


def choose_tokens(logits: jax.Array, step: jax.Array, rng: jax.Array, forced: jax.Array, low: jax.Array,
                  high: jax.Array, recent: jax.Array | None, options: SamplingOptions) -> jax.Array:
    """Picks the output ids of one step.

    logits: float32 [batch, vocab] (guidance already applied); step: [] int32 output position;
    forced/low/high: [output_length]; recent: int32 [batch, window] ids drawn in the last
    outputs (-1 = none) or None. Returns int32 [batch].
    """
    batch, vocab = logits.shape
    if recent is not None and options.repetition_penalty > 0:
        rows = jnp.broadcast_to(jnp.arange(batch)[:, None], recent.shape)
        hit = jnp.zeros((batch, vocab), bool).at[rows, jnp.maximum(recent, 0)].max(recent >= 0)
        logits = logits - options.repetition_penalty * hit
    ids = jnp.arange(vocab)
    legal = (ids >= low[step]) & (ids < high[step])
    logits = jnp.where(legal[None], logits, -jnp.inf)
    if options.temperature == 0:
        sampled = jnp.argmax(logits, axis=-1)
    else:
        logits = logits / options.temperature
        if options.top_k:
            kth = jax.lax.top_k(logits, min(options.top_k, vocab))[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if options.top_p < 1.0:
            ordered = jnp.sort(logits, axis=-1)[:, ::-1]
            probs = jax.nn.softmax(ordered, axis=-1)
            keep = (jnp.cumsum(probs, axis=-1) - probs) < options.top_p
            threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
            logits = jnp.where(logits < threshold, -jnp.inf, logits)
        sampled = jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)
    return jnp.where(forced[step] >= 0, forced[step], sampled).astype(jnp.int32)


def unrolled_for_decoding(config: TransformerConfig) -> TransformerConfig:
    """The same network with unrolled layers and no remat: the shape decoding runs fastest in.

    A scanned layer stack carries the per-layer KV caches as scan inputs/outputs, which XLA
    copies at every decoded token; unrolled layers update each cache in place (2-3x faster
    per step on CPU, bench/sampling.py). Remat only matters for gradients.
    """
    return dataclasses.replace(config, scan_layers=False, remat_policy='none')


def unstack_layer_params(params, num_layers: int):
    """Scanned params {'decoder': {'layers': leaves [layers, ...]}} -> {'layers_0': ..., ...}."""
    decoder = dict(params['decoder'])
    stacked = decoder.pop('layers')
    for i in range(num_layers):
        decoder[f'layers_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return dict(params, decoder=decoder)


class Sampler:
    """Compiles and runs the sampling loop for one model on one mesh.

    A model trained with scanned layers is run unrolled (`unrolled_for_decoding`); its
    parameters are unstacked inside the compiled program. Programs are cached per
    (options, guided, use_cache) and by jit per input shape.
    """

    def __init__(self, model: Transformer, partitioner: Partitioner | None = None):
        self.trained_config = model.config
        self.model = Transformer(unrolled_for_decoding(model.config))
        self.partitioner = partitioner or Partitioner()
        self._programs = {}

    def sample(self, params, prefix: Mapping[str, np.ndarray], constraints, rng: jax.Array,
               options: SamplingOptions = SamplingOptions(), unconditional_prefix: Mapping[str, np.ndarray] | None = None,
               use_cache: bool = True) -> np.ndarray:
        """Samples the output span for every prefix row.

        Args:
          params: the LM parameters (unboxed; sharded or not).
          prefix: features from `prefix_batch`, [batch, prefix_length].
          constraints: (forced, low, high) int32 [output_length] from `tasks.output_constraints`.
          rng: a jax PRNG key; the same key gives the same sample.
          options: SamplingOptions.
          unconditional_prefix: same batch size as `prefix`: the null prompt (built with
            drop_text=True) or a negative prompt for classifier-free guidance.
          use_cache: False re-runs the full sequence at every step (reference / benchmark).
        Returns: int32 [batch, output_length] vocabulary ids.
        """
        cfg = self.model.config
        forced, low, high = _check_constraints(constraints, cfg.vocab_size)
        validate_batch(prefix, cfg, name='prefix')
        batch = prefix['input_tokens'].shape[0]
        guided = unconditional_prefix is not None
        if guided:
            validate_batch(unconditional_prefix, cfg, name='unconditional_prefix')
            if unconditional_prefix['input_tokens'].shape[0] != batch:
                raise ValueError(f"unconditional_prefix has {unconditional_prefix['input_tokens'].shape[0]} rows; "
                                 f'expected {batch} like prefix.')
            prefix = concat_prefixes(prefix, unconditional_prefix)
        total_length = prefix['input_tokens'].shape[1] + forced.size - 1
        if cfg.position_embedding == 'learned' and total_length > cfg.max_length:
            raise ValueError(f'prefix + output need {total_length} positions; config.model.max_length is '
                             f'{cfg.max_length}.')
        prefix, rows = self._pad_rows(dict(prefix), guided)
        device_prefix = self.partitioner.shard_host_batch(prefix)
        key = (options, guided, use_cache)
        if key not in self._programs:
            self._programs[key] = jax.jit(functools.partial(
                self._sample_program, options=options, guided=guided, use_cache=use_cache))
        with self.partitioner.activate():
            out = self._programs[key](params, device_prefix, jnp.asarray(forced), jnp.asarray(low),
                                      jnp.asarray(high), rng)
        return np.asarray(jax.device_get(out))[:rows]

    def _pad_rows(self, prefix: dict, guided: bool) -> tuple[dict, int]:
        """Repeats each branch's first row so the model batch divides the mesh's batch shards."""
        branches = 2 if guided else 1
        rows = prefix['input_tokens'].shape[0] // branches
        multiple = self.partitioner.num_batch_shards // math.gcd(self.partitioner.num_batch_shards, branches)
        extra = -rows % multiple
        if not extra:
            return prefix, rows

        def pad(x):
            parts = [x[i * rows:(i + 1) * rows] for i in range(branches)]
            return np.concatenate([np.concatenate([p, np.repeat(p[:1], extra, axis=0)]) for p in parts])

        return {k: pad(v) for k, v in prefix.items()}, rows

    def _sample_program(self, params, prefix, forced, low, high, rng, *, options, guided, use_cache):
        if self.trained_config.scan_layers:
            params = unstack_layer_params(params, self.trained_config.num_layers)
        if use_cache:
            return self._cached_loop(params, prefix, forced, low, high, rng, options, guided)
        return self._recompute_loop(params, prefix, forced, low, high, rng, options, guided)

    def _pick(self, logits, step, rng, forced, low, high, out, options, guided):
        """Guidance + token choice for step `step`; logits [model_batch, vocab]. Returns [batch]."""
        if guided:
            cond, uncond = jnp.split(logits, 2, axis=0)
            logits = uncond + options.guidance_scale * (cond - uncond)
        recent = None
        if options.repetition_window and options.repetition_penalty:
            window = options.repetition_window
            padded = jnp.concatenate([jnp.full((out.shape[0], window), -1, jnp.int32), out], axis=1)
            recent = jax.lax.dynamic_slice_in_dim(padded, step, window, axis=1)
            recent = jnp.where(forced[jnp.clip(step - window + jnp.arange(window), 0)] >= 0, -1, recent)
        return choose_tokens(logits, step, rng, forced, low, high, recent, options)

    def _cached_loop(self, params, prefix, forced, low, high, rng, options, guided):
        output_length = forced.shape[0]
        prefix_length = prefix['input_tokens'].shape[1]
        model_batch = prefix['input_tokens'].shape[0]
        row_lengths = jnp.sum(prefix['segment_ids'] != 0, axis=1).astype(jnp.int32)
        logits, cache = self.model.apply({'params': params}, prefix, cache_length=prefix_length + output_length - 1,
                                         method=Transformer.prefill)
        cache_shardings = self.partitioner.logical_shardings(
            {k: jax.sharding.PartitionSpec(*v) for k, v in kv_cache_logical_axes().items()})
        cache = jax.lax.with_sharding_constraint(cache, cache_shardings)
        last = jnp.take_along_axis(logits, (row_lengths - 1)[:, None, None], axis=1)[:, 0]
        out = jnp.zeros((model_batch // (2 if guided else 1), output_length), jnp.int32)
        first = self._pick(last, 0, rng, forced, low, high, out, options, guided)
        out = out.at[:, 0].set(first)

        def body(state):
            step, cache, out = state
            token = out[:, step - 1]
            if guided:
                token = jnp.concatenate([token, token])
            logits, cache = self.model.apply({'params': params}, token[:, None], (row_lengths + step - 1)[:, None],
                                             cache, method=Transformer.decode_step)
            cache = jax.lax.with_sharding_constraint(cache, cache_shardings)
            chosen = self._pick(logits[:, 0], step, rng, forced, low, high, out, options, guided)
            return step + 1, cache, out.at[:, step].set(chosen)

        _, _, out = jax.lax.while_loop(lambda s: s[0] < output_length, body, (jnp.int32(1), cache, out))
        return out

    def _recompute_loop(self, params, prefix, forced, low, high, rng, options, guided):
        output_length = forced.shape[0]
        prefix_length = prefix['input_tokens'].shape[1]
        model_batch = prefix['input_tokens'].shape[0]
        row_lengths = jnp.sum(prefix['segment_ids'] != 0, axis=1).astype(jnp.int32)
        slots = output_length - 1
        grow = lambda x, fill: jnp.concatenate([x, jnp.broadcast_to(fill, (model_batch, slots)).astype(x.dtype)], 1)
        full = {
            'input_tokens': grow(prefix['input_tokens'], 0),
            'positions': grow(prefix['positions'], row_lengths[:, None] + jnp.arange(slots)[None]),
            'segment_ids': grow(prefix['segment_ids'], 1),
            'prefix_mask': grow(prefix['prefix_mask'], 0),
            'input_modality': grow(prefix['input_modality'], 0),
        }
        if TEXT_EMBEDDINGS in prefix:
            full[TEXT_EMBEDDINGS] = prefix[TEXT_EMBEDDINGS]
        out = jnp.zeros((model_batch // (2 if guided else 1), output_length), jnp.int32)
        read_slot = jnp.concatenate([row_lengths[:, None] - 1,
                                     prefix_length + jnp.broadcast_to(jnp.arange(slots), (model_batch, slots))], 1)

        def body(state):
            step, tokens, out = state
            logits = self.model.apply({'params': params}, dict(full, input_tokens=tokens))
            at = jax.lax.dynamic_slice_in_dim(read_slot, step, 1, axis=1)
            last = jnp.take_along_axis(logits, at[:, :, None], axis=1)[:, 0]
            chosen = self._pick(last, step, rng, forced, low, high, out, options, guided)
            fed = jnp.concatenate([chosen, chosen]) if guided else chosen
            slot = jnp.minimum(prefix_length + step, prefix_length + slots - 1)
            tokens = jnp.where(step < slots, jax.lax.dynamic_update_slice(tokens, fed[:, None], (0, slot)), tokens)
            return step + 1, tokens, out.at[:, step].set(chosen)

        _, _, out = jax.lax.while_loop(lambda s: s[0] < output_length, body,
                                       (jnp.int32(0), full['input_tokens'], out))
        return out
