"""The VideoPoet LM: a decoder-only prefix-LM transformer over the unified vocabulary.

Pre-norm blocks (RMSNorm or LayerNorm), grouped-query attention with the prefix-LM mask
(vp_jax/attention.py), gated MLP, final norm, float32 logits. Text embeddings (T5) are
projected by one linear layer and replace the token embedding at the `input_modality ==
TEXT_EMBEDDING` slots, in order: the j-th slot of a row takes row j of that row's
`text_embeddings`. Positions are RoPE (or learned) over the sequence; with
`visual_grid` each visual token also gets a learned embedding of its row and column in the
latent frame (`VisualGridEmbedding`), and with `visual_bit_embedding` a learned vector per
bit of its LFQ id (`VisualBitEmbedding`). Every parameter has logical axis names; with
`scan_layers` the layer parameters are stacked on a leading 'layers' axis.

Usage (batch = the feature dict of vp_jax/features.py, all [batch, length]):

    model = Transformer(TransformerConfig.from_config(config.model))
    params = model.init(rng, batch)['params']                       # (boxed; see Partitioner)
    logits = model.apply({'params': params}, batch)                  # [batch, length, vocab] f32
    logits = model.apply(..., batch, deterministic=False, rngs={'dropout': rng})

KV-cached sampling (the cache layout is in vp_jax/attention.py):

    logits, cache = model.apply(v, prefix_batch, cache_length=N, method=Transformer.prefill)
        # runs prefix_batch [batch, prefix_length] with the training mask and fills a cache
        # of capacity N; cache['index'] == prefix_length. Logits [batch, prefix_length, vocab].
    logits, cache = model.apply(v, tokens, positions, cache, method=Transformer.decode_step)
        # tokens, positions [batch, steps] (usually steps == 1), causal outputs written at
        # cache['index']; optional segment_ids [batch, steps] (default 1). Logits
        # [batch, steps, vocab]. The caller keeps index + steps <= N.

Decoded logits equal a full recompute of prefix ++ outputs (tests/vp_jax/test_model.py).
"""
from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.attention import Attention
from vp_jax.features import FEATURE_DTYPES, TEXT_EMBEDDINGS
from vp_jax.layers import GatedMlp, constrain, make_norm, named_param, remat_policy
from vp_jax.model_config import TransformerConfig
from vp_jax.vocabulary import Modality

MODEL_INPUTS = ('input_tokens', 'positions', 'segment_ids', 'prefix_mask', 'input_modality')


class TextEmbeddingSlots(nn.Module):
    """Projects text embeddings with one linear layer into the text slots of x.

    x [batch, length, embed]; text_embeddings [batch, text_length, text_embedding_dim];
    input_modality [batch, length]. The j-th slot (input_modality == TEXT_EMBEDDING) of a
    row takes the projection of text_embeddings[row, j]; other positions keep x.
    """
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, text_embeddings: jax.Array, input_modality: jax.Array) -> jax.Array:
        cfg = self.config
        if text_embeddings.ndim != 3 or text_embeddings.shape[0] != x.shape[0] or (
                text_embeddings.shape[2] != cfg.text_embedding_dim):
            raise ValueError(f'batch[{TEXT_EMBEDDINGS!r}] has shape {text_embeddings.shape}; expected '
                             f'[batch={x.shape[0]}, text_length, text_embedding_dim={cfg.text_embedding_dim}].')
        init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
        kernel = named_param(self, 'kernel', init, (cfg.text_embedding_dim, cfg.d_model), ('text_embed', 'embed'),
                             cfg.parameter_dtype)
        bias = named_param(self, 'bias', nn.initializers.zeros, (cfg.d_model,), ('embed',), cfg.parameter_dtype)
        projected = jnp.einsum('btf,fd->btd', text_embeddings.astype(x.dtype), kernel.astype(x.dtype))
        projected = projected + bias.astype(x.dtype)
        slots = input_modality == Modality.TEXT_EMBEDDING
        order = jnp.clip(jnp.cumsum(slots, axis=1) - 1, 0, text_embeddings.shape[1] - 1)
        gathered = jnp.take_along_axis(projected, order[..., None], axis=1)
        return jnp.where(slots[..., None], gathered, x)


def visual_run_index(tokens: jax.Array, visual_range: tuple[int, int], carry: jax.Array | None = None
                     ) -> jax.Array:
    """Place of each visual token in its run of consecutive visual tokens (0 = first); -1 elsewhere.

    tokens [batch, steps]; carry [batch] is the index of the token just before tokens[:, 0]
    (-1 when it was not visual), so a run continues across decode steps. A visual segment of
    the task layout is one such run, in raster order, e.g. [<bov_o>, v, v, v, <eov_o>] ->
    [-1, 0, 1, 2, -1].
    """
    is_visual = (tokens >= visual_range[0]) & (tokens < visual_range[1])
    count = jnp.cumsum(is_visual, axis=1)
    before_run = jax.lax.cummax(jnp.where(is_visual, 0, count), axis=1)
    if carry is not None:
        unbroken = jnp.cumsum(~is_visual, axis=1) == 0
        before_run = jnp.where(unbroken, -(carry[:, None] + 1), before_run)
    return jnp.where(is_visual, count - before_run - 1, -1).astype(jnp.int32)


class VisualGridEmbedding(nn.Module):
    """Learned row + column embeddings of each visual token's cell in its latent frame.

    With RoPE alone a token's place in the frame is only its 1-D offset from the others, so
    "the same cell one frame earlier" (h * w back) and "the cell above" (w back) are
    patterns a model must find; a small LM on a CPU budget learns video much faster when
    each token says which cell it is (issue 7 in the README). The cell is counted from the
    start of the token's visual run (`visual_run_index`), so a run must start at a frame
    boundary and use the configured (h, w) grid. x [batch, length, embed]; run_index
    [batch, length] (-1 = not visual, left unchanged).
    """
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, run_index: jax.Array) -> jax.Array:
        cfg = self.config
        h, w = cfg.visual_grid
        init = nn.initializers.normal(stddev=1.0)  # the token embedding's scale
        rows = named_param(self, 'rows', init, (h, cfg.d_model), (None, 'embed'), cfg.parameter_dtype)
        cols = named_param(self, 'columns', init, (w, cfg.d_model), (None, 'embed'), cfg.parameter_dtype)
        cell = jnp.maximum(run_index, 0) % (h * w)
        grid = jnp.take(rows, cell // w, axis=0) + jnp.take(cols, cell % w, axis=0)
        return x + jnp.where((run_index >= 0)[..., None], grid.astype(x.dtype), 0)


class VisualBitEmbedding(nn.Module):
    """Adds to each visual token sum_b (+1 or -1 by bit b of its LFQ id) * v_b, one learned v_b per bit.

    An LFQ id is the signs of the tokenizer's latent channels, so ids that differ in a bit or
    two are nearby latents. A plain embedding table learns each id alone; with this term an id
    the LM saw rarely (a handwriting absent from its training clips) still starts near the
    ids it shares signs with. x [batch, length, embed]; tokens [batch, length]; other tokens
    are left unchanged.
    """
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        low, high = cfg.visual_range
        num_bits = (high - low).bit_length() - 1
        # Each bit's vector at 1/sqrt(bits): the sum has the token embedding's scale.
        init = nn.initializers.normal(stddev=num_bits ** -0.5)
        vectors = named_param(self, 'bits', init, (num_bits, cfg.d_model), (None, 'embed'), cfg.parameter_dtype)
        is_visual = (tokens >= low) & (tokens < high)
        bits = (jnp.maximum(tokens - low, 0)[..., None] >> jnp.arange(num_bits)) & 1
        term = jnp.einsum('blk,kd->bld', (2 * bits - 1).astype(x.dtype), vectors.astype(x.dtype))
        return x + jnp.where(is_visual[..., None], term, 0)


class DecoderBlock(nn.Module):
    """x + Attention(Norm(x)), then x + Mlp(Norm(x)). [batch, length, embed] -> same."""
    config: TransformerConfig
    mode: str = 'train'
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, tokens_info, layer_cache, decode_state):
        cfg = self.config
        h = make_norm(cfg, 'pre_attention_norm')(x)
        attended, new_cache = Attention(cfg, self.mode, name='attention')(h, tokens_info, layer_cache, decode_state)
        x = x + nn.Dropout(cfg.dropout_rate)(attended, deterministic=self.deterministic)
        h = make_norm(cfg, 'pre_mlp_norm')(x)
        x = x + nn.Dropout(cfg.dropout_rate)(GatedMlp(cfg, name='mlp')(h, self.deterministic),
                                             deterministic=self.deterministic)
        return constrain(x, ('batch', 'length', 'embed')), new_cache


class DecoderStack(nn.Module):
    """num_layers DecoderBlocks, scanned (params on a leading 'layers' axis) or unrolled.

    layer caches come in and go out stacked: [layers, batch, cache_length, kv_heads, head_dim].
    """
    config: TransformerConfig
    mode: str
    deterministic: bool

    @nn.compact
    def __call__(self, x, tokens_info, layer_caches, decode_state):
        cfg = self.config
        block = DecoderBlock
        policy = remat_policy(cfg.remat_policy)
        if cfg.remat_policy != 'none':
            block = nn.remat(block, policy=policy, prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            scanned = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                              in_axes=(nn.broadcast, 0, nn.broadcast), length=cfg.num_layers,
                              metadata_params={nn.PARTITION_NAME: 'layers'})
            return scanned(cfg, self.mode, self.deterministic, name='layers')(x, tokens_info, layer_caches,
                                                                                decode_state)
        new_caches = []
        for i in range(cfg.num_layers):
            layer_cache = None if layer_caches is None else jax.tree.map(lambda c: c[i], layer_caches)
            x, new_cache = block(cfg, self.mode, self.deterministic, name=f'layers_{i}')(
                x, tokens_info, layer_cache, decode_state)
            new_caches.append(new_cache)
        if new_caches[0] is None:
            return x, None
        return x, jax.tree.map(lambda *c: jnp.stack(c), *new_caches)


class Transformer(nn.Module):
    """Decoder-only prefix LM. See the module docstring for the three entry points."""
    config: TransformerConfig

    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True) -> jax.Array:
        logits, _ = self._run(batch, None, 'train', deterministic)
        return logits

    def prefill(self, batch: Mapping[str, jax.Array], cache_length: int) -> tuple[jax.Array, dict]:
        length = batch['input_tokens'].shape[1]
        if not length <= cache_length:
            raise ValueError(f'prefill: cache_length={cache_length} must be >= the prefix length {length}.')
        run_index = self._visual_run_index(batch['input_tokens'])
        logits, layer_caches = self._run(dict(batch, visual_run_index=run_index), None, 'prefill', True)
        pad = [(0, 0), (0, 0), (0, cache_length - length), (0, 0), (0, 0)]
        last = jnp.sum(batch['segment_ids'] != 0, axis=1) - 1  # rows are right-padded
        cache = {
            'key': jnp.pad(layer_caches[0], pad),
            'value': jnp.pad(layer_caches[1], pad),
            'segment_ids': jnp.pad(batch['segment_ids'].astype(jnp.int32), [(0, 0), (0, cache_length - length)]),
            'index': jnp.asarray(length, jnp.int32),
            'visual_run': jnp.take_along_axis(run_index, jnp.maximum(last, 0)[:, None], axis=1)[:, 0],
        }
        return logits, cache

    def decode_step(self, tokens: jax.Array, positions: jax.Array, cache: dict,
                    segment_ids: jax.Array | None = None) -> tuple[jax.Array, dict]:
        if tokens.shape != positions.shape or tokens.ndim != 2:
            raise ValueError(f'decode_step: tokens {tokens.shape} and positions {positions.shape} must both be '
                             '[batch, steps].')
        if tokens.shape[1] > cache['key'].shape[2]:
            raise ValueError(f'decode_step: {tokens.shape[1]} steps exceed the cache length {cache["key"].shape[2]}.')
        segment_ids = jnp.ones_like(tokens) if segment_ids is None else segment_ids
        index = cache['index']
        cache_segments = jax.lax.dynamic_update_slice(cache['segment_ids'], segment_ids.astype(jnp.int32), (0, index))
        run_index = self._visual_run_index(tokens, cache['visual_run'])
        batch = {'input_tokens': tokens, 'positions': positions, 'segment_ids': segment_ids,
                 'prefix_mask': jnp.zeros_like(tokens), 'input_modality': jnp.zeros_like(tokens),
                 'visual_run_index': run_index}
        decode_state = {'index': index, 'segment_ids': cache_segments}
        logits, (keys, values) = self._run(batch, ((cache['key'], cache['value']), decode_state), 'decode', True)
        new_cache = {'key': keys, 'value': values, 'segment_ids': cache_segments,
                     'index': index + tokens.shape[1], 'visual_run': run_index[:, -1]}
        return logits, new_cache

    def _visual_run_index(self, tokens: jax.Array, carry: jax.Array | None = None) -> jax.Array:
        if self.config.visual_grid == (0, 0):
            return jnp.full(tokens.shape, -1, jnp.int32)
        return visual_run_index(tokens, self.config.visual_range, carry)

    @nn.compact
    def _run(self, batch, decode_inputs, mode: str, deterministic: bool):
        cfg = self.config
        dtype = cfg.activation_dtype
        embedding = named_param(self, 'token_embedding', nn.initializers.normal(stddev=1.0),
                                (cfg.vocab_size, cfg.d_model), ('vocab', 'embed'), cfg.parameter_dtype)
        x = jnp.take(embedding, batch['input_tokens'], axis=0).astype(dtype)
        if cfg.visual_bit_embedding:
            x = VisualBitEmbedding(cfg, name='visual_bit_embedding')(x, batch['input_tokens'])
        if cfg.text_embedding_dim and mode != 'decode':  # decoded tokens are outputs, never text slots.
            if TEXT_EMBEDDINGS not in batch:
                raise ValueError(f'config.model.text_embedding_dim={cfg.text_embedding_dim} but the batch has no '
                                 f'{TEXT_EMBEDDINGS!r}.')
            x = TextEmbeddingSlots(cfg, name='text_projection')(x, batch[TEXT_EMBEDDINGS], batch['input_modality'])
        if cfg.position_embedding == 'learned':
            table = named_param(self, 'position_embedding', nn.initializers.normal(stddev=0.02),
                                (cfg.max_length, cfg.d_model), ('length', 'embed'), cfg.parameter_dtype)
            x = x + jnp.take(table, batch['positions'], axis=0).astype(dtype)
        if cfg.visual_grid != (0, 0):
            run_index = batch.get('visual_run_index')  # given by prefill / decode_step (runs across steps)
            if run_index is None:
                run_index = self._visual_run_index(batch['input_tokens'])
            x = VisualGridEmbedding(cfg, name='visual_grid_embedding')(x, run_index)
        x = constrain(x, ('batch', 'length', 'embed'))
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)

        tokens_info = {key: batch[key] for key in ('positions', 'segment_ids', 'prefix_mask')}
        layer_caches, decode_state = (None, None) if decode_inputs is None else decode_inputs
        x, new_caches = DecoderStack(cfg, mode, deterministic, name='decoder')(x, tokens_info, layer_caches,
                                                                                 decode_state)
        x = make_norm(cfg, 'final_norm')(x)
        if cfg.tie_embeddings:
            logits = jnp.einsum('bld,vd->blv', x, embedding.astype(dtype), preferred_element_type=jnp.float32)
            logits = logits * cfg.d_model ** -0.5
        else:
            kernel = named_param(self, 'logits', nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'),
                                 (cfg.d_model, cfg.vocab_size), ('embed', 'vocab'), cfg.parameter_dtype)
            logits = jnp.einsum('bld,dv->blv', x, kernel.astype(dtype), preferred_element_type=jnp.float32)
        return constrain(logits, ('batch', 'length', 'vocab')), new_caches


def validate_batch(batch: Mapping[str, np.ndarray], config: TransformerConfig, name: str = 'batch') -> None:
    """Host-side check of a batch before it reaches the device; errors name the field.

    Checks presence, shapes and dtypes of the features, token ids < vocab_size, positions
    < max_length (learned positions), and that no row has more text slots than
    text_embeddings rows.
    """
    missing = [key for key in MODEL_INPUTS if key not in batch]
    if missing:
        raise ValueError(f'{name} is missing features {missing}; it has {sorted(batch)}.')
    shape = np.shape(batch['input_tokens'])
    if len(shape) != 2:
        raise ValueError(f'{name}[input_tokens] has shape {shape}; expected [batch, length].')
    for key, value in batch.items():
        if key in FEATURE_DTYPES:
            if np.shape(value) != shape:
                raise ValueError(f'{name}[{key}] has shape {np.shape(value)}; expected {shape} like input_tokens.')
            if np.asarray(value).dtype != FEATURE_DTYPES[key]:
                raise ValueError(f'{name}[{key}] has dtype {np.asarray(value).dtype}; expected '
                                 f'{np.dtype(FEATURE_DTYPES[key])}.')
    for key in ('input_tokens', 'target_tokens'):
        if key in batch:
            ids = np.asarray(batch[key])
            if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
                raise ValueError(f'{name}[{key}] has ids in [{ids.min()}, {ids.max()}]; expected '
                                 f'[0, vocab_size={config.vocab_size}).')
    positions = np.asarray(batch['positions'])
    if positions.size and (positions.min() < 0 or (config.position_embedding == 'learned'
                                                   and positions.max() >= config.max_length)):
        raise ValueError(f'{name}[positions] spans [{positions.min()}, {positions.max()}]; expected '
                         f'[0, max_length={config.max_length}).')
    slots = (np.asarray(batch['input_modality']) == Modality.TEXT_EMBEDDING).sum(axis=1)
    if config.text_embedding_dim and slots.any():
        if TEXT_EMBEDDINGS not in batch:
            raise ValueError(f'{name} has text-embedding slots but no {TEXT_EMBEDDINGS!r}.')
        text_length = np.shape(batch[TEXT_EMBEDDINGS])[1]
        if slots.max() > text_length:
            raise ValueError(f'{name}: a row has {slots.max()} text-embedding slots but '
                             f'{TEXT_EMBEDDINGS} has only {text_length} rows per example.')
