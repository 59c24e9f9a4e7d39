"""Prefix-LM self-attention with grouped-query heads, three kernels and a KV cache.

The mask is data (big_vision style): query q may attend key k iff

    segment_ids[q] == segment_ids[k] != 0  and  (k <= q  or  (prefix[q] and prefix[k]))

so the prefix of each packed example is bidirectional, the output is causal, examples
never see each other and padding (segment 0) neither attends nor is attended. Worked
example, one row, two packed examples, last slot padding:

    segment_ids  1 1 1 2 2 0        allowed[q, k] (q = row, k = column)
    prefix_mask  1 1 0 1 0 0        q0: 1 1 0 0 0 0    q3: 0 0 0 1 0 0
                                    q1: 1 1 0 0 0 0    q4: 0 0 0 1 1 0
                                    q2: 1 1 1 0 0 0    q5: 0 0 0 0 0 0

Kernels (`config.attention_impl`):
  'xla'    einsums with a float32 softmax and a hand-written backward (`dense_attention`);
           runs everywhere; any mask pattern; skips key blocks right of the diagonal when
           no prefix reaches past its block.
  'cudnn'  jax.nn.dot_product_attention(implementation='cudnn'), GPU only, with the
           dense boolean mask above.
  'splash' Pallas TPU splash attention, TPU only. Splash masks are static, so the
           prefix-LM mask is built from two kernel calls: a causal pass with the segment
           ids (exact for output queries) and a full pass whose key segment ids keep only
           prefix keys (exact for prefix queries). This needs each example's prefix to be
           contiguous at the start of its segment, which the feature converter guarantees.
           Under an active mesh the kernel runs per shard (shard_map over the batch and
           head axes the logical rules give; the sequence axis must stay unsharded).
Decoding (`mode='decode'`) always uses the 'xla' path: one query row per step is
memory-bound and gains nothing from the fused kernels.

KV cache, a plain pytree (axis names from `kv_cache_logical_axes`):
    {'key':   [layers, batch, cache_length, kv_heads, head_dim],
     'value': [layers, batch, cache_length, kv_heads, head_dim],
     'segment_ids': [batch, cache_length] int32 (0 = empty slot),
     'index': [] int32, the next free slot,
     'visual_run': [batch] int32, the last token's place in its visual run (-1 = not visual;
                   vp_jax/model.py visual_run_index)}
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from vp_jax.layers import constrain, named_param, rope
from vp_jax.model_config import TransformerConfig

_MASKED = -1e30  # finite, so rows without any allowed key stay NaN-free (they are padding).
CAUSAL_BLOCK = 128  # query rows per block in xla_attention's causal block skipping.


def prefix_lm_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array, q_prefix: jax.Array,
                   kv_prefix: jax.Array, q_index: jax.Array, kv_index: jax.Array) -> jax.Array:
    """Boolean attention mask [batch, q_length, kv_length] of the rule in the module docstring.

    Args:
      q_segment_ids, q_prefix: [batch, q_length]; kv_segment_ids, kv_prefix: [batch, kv_length].
      q_index, kv_index: [q_length] / [kv_length] slot index in the sequence (or cache).
    """
    same_segment = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (q_segment_ids[:, :, None] != 0)
    causal = kv_index[None, None, :] <= q_index[None, :, None]
    bidirectional = q_prefix[:, :, None].astype(bool) & kv_prefix[:, None, :].astype(bool)
    return same_segment & (causal | bidirectional)


def kv_cache_logical_axes() -> dict[str, tuple[str, ...]]:
    """Logical axis names of the KV cache leaves (shard it with Partitioner.logical_shardings)."""
    per_layer = ('layers', 'batch', 'cache_length', 'kv_heads', 'kv')
    return {'key': per_layer, 'value': per_layer, 'segment_ids': ('batch', 'cache_length'), 'index': (),
            'visual_run': ('batch',)}


def _grouped_heads_first(query: jax.Array, kv_heads: int) -> jax.Array:
    """[batch, length, heads, head_dim] -> [batch, kv_heads, groups, length, head_dim]."""
    batch, length, heads, head_dim = query.shape
    return query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim).transpose(0, 2, 3, 1, 4)


def _ungrouped_length_first(x: jax.Array) -> jax.Array:
    """The inverse of `_grouped_heads_first`."""
    batch, kv_heads, groups, length, head_dim = x.shape
    return x.transpose(0, 3, 1, 2, 4).reshape(batch, length, kv_heads * groups, head_dim)


def _heads_first(x: jax.Array) -> jax.Array:
    """[batch, length, kv_heads, head_dim] <-> [batch, kv_heads, length, head_dim]."""
    return x.transpose(0, 2, 1, 3)


def _dense_forward(query, key, value, mask):
    q, k, v = _grouped_heads_first(query, key.shape[2]), _heads_first(key), _heads_first(value)
    logits = jnp.einsum('bkgtd,bksd->bkgts', q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, None, None], logits, _MASKED)
    exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    probs = exp / jnp.sum(exp, axis=-1, keepdims=True)  # float32 [batch, kv_heads, groups, q, kv]
    context = jnp.einsum('bkgts,bksd->bkgtd', probs.astype(v.dtype), v)
    return _ungrouped_length_first(context), (q, k, v, mask, probs)


def _dense_backward(residuals, d_context):
    q, k, v, mask, probs = residuals
    d_context = _grouped_heads_first(d_context, k.shape[1])
    d_value = jnp.einsum('bkgts,bkgtd->bksd', probs.astype(v.dtype), d_context)
    d_probs = jnp.einsum('bkgtd,bksd->bkgts', d_context, v, preferred_element_type=jnp.float32)
    d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True))
    # A row with no allowed key (padding) has uniform probs; its masked logits get no gradient.
    d_logits = jnp.where(mask[:, None, None], d_logits, 0.0).astype(q.dtype)
    d_query = jnp.einsum('bkgts,bksd->bkgtd', d_logits, k)
    d_key = jnp.einsum('bkgts,bkgtd->bksd', d_logits, q)
    return _ungrouped_length_first(d_query), _heads_first(d_key), _heads_first(d_value), None


@jax.custom_vjp
def dense_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array) -> jax.Array:
    """Every (query, key) pair computed, then masked; same contract as `xla_attention`.

    Heads-first layout and a hand-written backward (the softmax gradient from the saved
    float32 probabilities): on a 2-core CPU the forward and backward at the demo LM's
    shapes ran ~1.7-2x faster than autodiff through jax.nn.softmax in the [batch, length,
    heads, head_dim] layout (docs/demo_results.md); the maths is the same.
    """
    return _dense_forward(query, key, value, mask)[0]


dense_attention.defvjp(_dense_forward, _dense_backward)


def _block_causal_attention(query, key, value, mask, block: int) -> jax.Array:
    """Query block i reads only keys [0, (i + 1) * block): exact when no key right of that is allowed."""
    outputs = []
    for end in range(block, query.shape[1] + 1, block):
        rows = slice(end - block, end)
        outputs.append(dense_attention(query[:, rows], key[:, :end], value[:, :end], mask[:, rows, :end]))
    return jnp.concatenate(outputs, axis=1)


def xla_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array,
                  block: int = CAUSAL_BLOCK) -> jax.Array:
    """Reference attention, skipping key blocks right of the diagonal when the mask allows.

    Causal outputs never look right, so query block i (of `block` rows) can stop at key
    (i + 1) * block. A prefix reaching past its block breaks that; one `lax.cond` on the mask
    then falls back to the dense computation, so the result is always exact.

    Args:
      query: [batch, q_length, heads, head_dim], already scaled by 1/sqrt(head_dim).
      key, value: [batch, kv_length, kv_heads, head_dim].
      mask: bool [batch, q_length, kv_length].
    Returns: [batch, q_length, heads, head_dim].
    """
    length = query.shape[1]
    if length != key.shape[1] or length % block or length == block:
        return dense_attention(query, key, value, mask)
    block_index = jnp.arange(length) // block
    right_of_diagonal_blocks = block_index[None, :] > block_index[:, None]
    needs_dense = jnp.any(mask & right_of_diagonal_blocks)
    return jax.lax.cond(needs_dense, dense_attention, functools.partial(_block_causal_attention, block=block),
                        query, key, value, mask)


def cudnn_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array) -> jax.Array:
    """cuDNN fused attention (GPU only); same contract as `xla_attention`."""
    if jax.default_backend() != 'gpu':
        raise RuntimeError(f"config.model.attention_impl='cudnn' needs a GPU backend; this process runs on "
                           f"{jax.default_backend()!r}. Use attention_impl='xla' here.")
    if query.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"config.model.attention_impl='cudnn' needs dtype bfloat16 or float16; got {query.dtype}.")
    return jax.nn.dot_product_attention(query, key, value, mask=mask[:, None], scale=1.0, implementation='cudnn')


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array,
                     prefix_mask: jax.Array, interpret: bool = False) -> jax.Array:
    """Pallas splash attention (TPU; `interpret=True` runs it anywhere, slowly, for tests).

    Same shapes as `xla_attention`, with the mask given as segment_ids / prefix_mask
    [batch, length] (see the module docstring for the two-pass construction).
    """
    if not interpret and jax.default_backend() != 'tpu':
        raise RuntimeError(f"config.model.attention_impl='splash' needs a TPU backend; this process runs on "
                           f"{jax.default_backend()!r}. Use attention_impl='xla' here.")
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    batch, length, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    block = min(512, length)
    if length % block or length % 128:
        raise ValueError(f"attention_impl='splash': sequence length {length} must be a multiple of 128.")
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)

    def make_kernel(mask_cls):
        mask = splash_mask.MultiHeadMask([mask_cls((length, length))] * (heads // kv_heads))
        return splash.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)

    causal_kernel = make_kernel(splash_mask.CausalMask)
    full_kernel = make_kernel(splash_mask.FullMask)
    # [batch, kv_heads, groups, length, head_dim] and [batch, kv_heads, length, head_dim].
    q = query.reshape(batch, length, kv_heads, heads // kv_heads, head_dim).transpose(0, 2, 3, 1, 4)
    k, v = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
    prefix = prefix_mask.astype(bool)
    prefix_kv_segments = jnp.where(prefix, segment_ids, -1)

    def one_example(q_b, k_b, v_b, seg_b, prefix_kv_seg_b):
        causal_ids = splash.SegmentIds(q=seg_b, kv=seg_b)
        prefix_ids = splash.SegmentIds(q=seg_b, kv=prefix_kv_seg_b)
        per_kv_head = lambda kernel, ids: jax.vmap(functools.partial(kernel, segment_ids=ids))(q_b, k_b, v_b)
        return per_kv_head(causal_kernel, causal_ids), per_kv_head(full_kernel, prefix_ids)

    causal_out, prefix_out = jax.vmap(one_example)(q, k, v, segment_ids, prefix_kv_segments)
    out = jnp.where(prefix[:, None, None, :, None], prefix_out, causal_out)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, head_dim)


def sharded_splash_attention(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array,
                             prefix_mask: jax.Array, interpret: bool = False) -> jax.Array:
    """`splash_attention` per shard when a mesh is active (Partitioner.activate()), else directly.

    A Pallas kernel is opaque to XLA's partitioner, so it runs inside shard_map with the
    mesh axes the logical rules assign to ('batch', 'length', 'heads' | 'kv_heads', 'kv').
    """
    kernel = functools.partial(splash_attention, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(query, key, value, segment_ids, prefix_mask)
    rules = nn.get_logical_axis_rules()
    q_spec = nn.logical_to_mesh_axes(('batch', 'length', 'heads', 'kv'), rules)
    kv_spec = nn.logical_to_mesh_axes(('batch', 'length', 'kv_heads', 'kv'), rules)
    token_spec = nn.logical_to_mesh_axes(('batch', 'length'), rules)
    if q_spec[1] is not None:
        raise ValueError(f"attention_impl='splash' needs the 'length' axis unsharded; the rules map it to {q_spec[1]!r}.")
    return jax.shard_map(kernel, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, token_spec, token_spec),
                         out_specs=q_spec, check_vma=False)(query, key, value, segment_ids, prefix_mask)


class Attention(nn.Module):
    """Multi-head (grouped-query) self-attention, pre-projected with logical axis names.

    mode 'train' / 'prefill': x [batch, length, embed] attends within itself with the
    prefix-LM mask; 'prefill' also returns this layer's (key, value) [batch, length,
    kv_heads, head_dim]. mode 'decode': x [batch, steps, embed] is written into the
    layer cache at `decode_state['index']` and attends over the whole cache.
    """
    config: TransformerConfig
    mode: str = 'train'

    @nn.compact
    def __call__(self, x: jax.Array, tokens_info: dict, layer_cache: tuple | None, decode_state: dict | None):
        cfg = self.config
        dtype = cfg.activation_dtype
        init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
        w_query = named_param(self, 'query', init, (cfg.d_model, cfg.num_heads, cfg.head_dim),
                              ('embed', 'heads', 'kv'), cfg.parameter_dtype)
        w_key = named_param(self, 'key', init, (cfg.d_model, cfg.num_kv_heads, cfg.head_dim),
                            ('embed', 'kv_heads', 'kv'), cfg.parameter_dtype)
        w_value = named_param(self, 'value', init, (cfg.d_model, cfg.num_kv_heads, cfg.head_dim),
                              ('embed', 'kv_heads', 'kv'), cfg.parameter_dtype)
        w_out = named_param(self, 'out', init, (cfg.num_heads, cfg.head_dim, cfg.d_model),
                            ('heads', 'kv', 'embed'), cfg.parameter_dtype)

        # The 1/sqrt(head_dim) scale is folded into the query projection's output.
        query = jnp.einsum('bld,dhk->blhk', x, (w_query * cfg.head_dim ** -0.5).astype(dtype))
        key = jnp.einsum('bld,dhk->blhk', x, w_key.astype(dtype))
        value = jnp.einsum('bld,dhk->blhk', x, w_value.astype(dtype))
        if cfg.position_embedding == 'rope':
            query = rope(query, tokens_info['positions'], cfg.rope_theta)
            key = rope(key, tokens_info['positions'], cfg.rope_theta)
        query = constrain(checkpoint_name(query, 'query_proj'), ('batch', 'length', 'heads', 'kv'))
        key = constrain(checkpoint_name(key, 'key_proj'), ('batch', 'length', 'kv_heads', 'kv'))
        value = constrain(checkpoint_name(value, 'value_proj'), ('batch', 'length', 'kv_heads', 'kv'))

        new_cache = None
        if self.mode == 'decode':
            context, new_cache = self._decode(query, key, value, tokens_info, layer_cache, decode_state)
        else:
            context = self._attend_sequence(query, key, value, tokens_info)
            if self.mode == 'prefill':
                new_cache = (key, value)
        context = constrain(checkpoint_name(context, 'attention_context'), ('batch', 'length', 'heads', 'kv'))
        out = jnp.einsum('blhk,hkd->bld', context, w_out.astype(dtype))
        return checkpoint_name(out, 'out_proj'), new_cache

    def _attend_sequence(self, query, key, value, tokens_info):
        segment_ids, prefix_mask = tokens_info['segment_ids'], tokens_info['prefix_mask']
        impl = self.config.attention_impl
        if impl == 'splash':
            return sharded_splash_attention(query, key, value, segment_ids, prefix_mask)
        index = jnp.arange(query.shape[1])
        mask = prefix_lm_mask(segment_ids, segment_ids, prefix_mask, prefix_mask, index, index)
        if impl == 'cudnn':
            return cudnn_attention(query, key, value, mask)
        return xla_attention(query, key, value, mask)

    def _decode(self, query, key, value, tokens_info, layer_cache, decode_state):
        cached_key, cached_value = layer_cache
        index = decode_state['index']
        cached_key = jax.lax.dynamic_update_slice(cached_key, key.astype(cached_key.dtype), (0, index, 0, 0))
        cached_value = jax.lax.dynamic_update_slice(cached_value, value.astype(cached_value.dtype), (0, index, 0, 0))
        steps, cache_length = query.shape[1], cached_key.shape[1]
        q_prefix = jnp.zeros(query.shape[:2], bool)  # decoded tokens are outputs: causal.
        mask = prefix_lm_mask(tokens_info['segment_ids'], decode_state['segment_ids'], q_prefix,
                              jnp.zeros((query.shape[0], cache_length), bool), index + jnp.arange(steps),
                              jnp.arange(cache_length))
        context = xla_attention(query, cached_key.astype(query.dtype), cached_value.astype(query.dtype), mask)
        return context, (cached_key, cached_value)
