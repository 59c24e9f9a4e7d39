"""Building blocks of the LM: norms, gated MLP, RoPE, and the remat presets.

Every parameter is created through `named_param` so it carries logical axis names
(vp_jax/partitioning.py maps them to the mesh); activations are annotated with
`constrain` using the names ('batch', 'length', 'embed' | 'heads' | 'kv' | 'mlp' | 'vocab').
Tensors worth saving under rematerialisation are tagged once here with
`checkpoint_name`; `remat_policy(name)` turns a preset name into a jax policy.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from vp_jax.model_config import TransformerConfig

# Tags placed with checkpoint_name in the model code (attention.py and MLP below).
SAVEABLE_NAMES = ('query_proj', 'key_proj', 'value_proj', 'attention_context', 'out_proj', 'mlp_hidden')

_REMAT_PRESETS = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'minimal': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    'save_qkv_proj': jax.checkpoint_policies.save_only_these_names('query_proj', 'key_proj', 'value_proj'),
    'save_dot_except_mlp': jax.checkpoint_policies.save_only_these_names(
        'query_proj', 'key_proj', 'value_proj', 'attention_context', 'out_proj'),
    'save_out_proj': jax.checkpoint_policies.save_only_these_names('out_proj'),
}


def remat_policy(name: str):
    """The jax.checkpoint policy of a preset name ('none' means no rematerialisation: None)."""
    if name == 'none':
        return None
    if name not in _REMAT_PRESETS:
        raise ValueError(f'config.model.remat_policy={name!r}: expected one of {("none", *_REMAT_PRESETS)}.')
    return _REMAT_PRESETS[name]


def named_param(module: nn.Module, name: str, init, shape: Sequence[int], axes: Sequence[str], dtype):
    """A parameter whose initializer is boxed with logical axis names."""
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Logical sharding constraint; a no-op outside `Partitioner.activate()`."""
    return nn.with_logical_constraint(x, tuple(axes))


class Norm(nn.Module):
    """RMSNorm or LayerNorm over the last axis, computed in float32, cast back to `dtype`."""
    kind: str
    epsilon: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        x32 = x.astype(jnp.float32)
        if self.kind == 'layernorm':
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        scale = named_param(self, 'scale', nn.initializers.ones, (features,), ('norm',), self.param_dtype)
        normed = normed * scale.astype(jnp.float32)
        if self.kind == 'layernorm':
            bias = named_param(self, 'bias', nn.initializers.zeros, (features,), ('norm',), self.param_dtype)
            normed = normed + bias.astype(jnp.float32)
        return normed.astype(self.dtype)


def make_norm(config: TransformerConfig, name: str | None = None) -> Norm:
    return Norm(kind=config.norm, epsilon=config.norm_epsilon, dtype=config.activation_dtype,
                param_dtype=config.parameter_dtype, name=name)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding (half-split layout) in float32.

    Args:
      x: [batch, length, heads, head_dim].
      positions: [batch, length] int, the token's position inside its segment.
    Returns: x rotated, same shape and dtype.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None, None] * inv_freq  # [batch, length, 1, half]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


class GatedMlp(nn.Module):
    """act(x W_gate) * (x W_up) W_down, act = SiLU (SwiGLU) or GELU (GeGLU).

    [batch, length, embed] -> [batch, length, embed]; hidden [batch, length, mlp].
    """
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')
        w_gate = named_param(self, 'wi_gate', init, (cfg.d_model, cfg.mlp_dim), ('embed', 'mlp'), cfg.parameter_dtype)
        w_up = named_param(self, 'wi_up', init, (cfg.d_model, cfg.mlp_dim), ('embed', 'mlp'), cfg.parameter_dtype)
        w_down = named_param(self, 'wo', init, (cfg.mlp_dim, cfg.d_model), ('mlp', 'embed'), cfg.parameter_dtype)
        gate = jnp.einsum('bld,dm->blm', x, w_gate.astype(dtype))
        up = jnp.einsum('bld,dm->blm', x, w_up.astype(dtype))
        activation = nn.silu if cfg.mlp_activation == 'swiglu' else nn.gelu
        hidden = checkpoint_name(activation(gate) * up, 'mlp_hidden')
        hidden = constrain(hidden, ('batch', 'length', 'mlp'))
        hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
        return jnp.einsum('blm,md->bld', hidden, w_down.astype(dtype))
