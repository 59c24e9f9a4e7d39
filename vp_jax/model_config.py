"""The LM's hyper-parameters: one frozen, validated record built from `config.model`.

Flax modules need hashable attributes, and bad values must fail before tracing with a
message that names the field, so `config.model` (an ml_collections ConfigDict from
`experiments/*.py`) is turned into a `TransformerConfig` once:

    model_config = TransformerConfig.from_config(config.model)
    model = Transformer(model_config)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections

MLP_ACTIVATIONS = ('swiglu', 'gelu')
NORMS = ('rmsnorm', 'layernorm')
POSITION_EMBEDDINGS = ('rope', 'learned')
ATTENTION_IMPLS = ('xla', 'cudnn', 'splash')
DTYPES = ('float32', 'bfloat16', 'float16')
# Names of the remat presets; vp_jax.layers.remat_policy maps them to jax policies.
REMAT_POLICIES = ('none', 'full', 'minimal', 'save_qkv_proj', 'save_dot_except_mlp', 'save_out_proj')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Decoder-only prefix-LM shape and numerics (see vp_jax/model.py)."""
    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    num_kv_heads: int = 0  # 0 means num_heads (plain multi-head attention).
    mlp_activation: str = 'swiglu'
    norm: str = 'rmsnorm'
    norm_epsilon: float = 1e-6
    position_embedding: str = 'rope'
    max_length: int = 2048
    rope_theta: float = 10_000.0
    text_embedding_dim: int = 0  # 0 means the batch carries no text embeddings.
    dropout_rate: float = 0.0
    tie_embeddings: bool = False
    param_dtype: str = 'float32'
    dtype: str = 'float32'
    scan_layers: bool = True
    remat_policy: str = 'none'
    attention_impl: str = 'xla'
    # Learned row and column embeddings added to every visual token, by its place in the
    # latent frame (vp_jax/model.py VisualGridEmbedding). (h, w) of the latent grid;
    # (0, 0) = off, (-1, -1) = the data's latent grid (config.resolve_config fills it).
    visual_grid: tuple[int, int] = (0, 0)
    # Adds to each visual token the sum of one learned vector per bit of its LFQ id, signed by
    # that bit (vp_jax/model.py VisualBitEmbedding): ids that share latent signs share part of
    # their embedding, so an id seen rarely in training still lands near its neighbours.
    visual_bit_embedding: bool = False
    # Vocabulary ids [low, high) of visual tokens, which the grid and bit embeddings read;
    # filled from the data vocabulary when either is on.
    visual_range: tuple[int, int] = (0, 0)

    def __post_init__(self):
        if self.num_kv_heads == 0:
            object.__setattr__(self, 'num_kv_heads', self.num_heads)
        for name in ('visual_grid', 'visual_range'):  # JSON round trips give lists; keep it hashable
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict) -> 'TransformerConfig':
        """Builds from `config.model`; unknown or missing keys are errors naming the key."""
        values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f'config.model has unknown fields {unknown}; known fields: {sorted(fields)}.')
        missing = sorted(name for name, f in fields.items()
                         if f.default is dataclasses.MISSING and name not in values)
        if missing:
            raise ValueError(f'config.model is missing required fields {missing}.')
        return cls(**values)

    @property
    def activation_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def parameter_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def _validate(self) -> None:
        positive = ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'head_dim', 'mlp_dim', 'num_kv_heads',
                    'max_length')
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f'config.model.{name}={value!r}: expected a positive integer.')
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f'config.model.num_heads={self.num_heads} must be a multiple of '
                             f'config.model.num_kv_heads={self.num_kv_heads} (grouped-query attention).')
        choices = {'mlp_activation': MLP_ACTIVATIONS, 'norm': NORMS, 'position_embedding': POSITION_EMBEDDINGS,
                   'attention_impl': ATTENTION_IMPLS, 'param_dtype': DTYPES, 'dtype': DTYPES,
                   'remat_policy': REMAT_POLICIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f'config.model.{name}={getattr(self, name)!r}: expected one of {allowed}.')
        if self.position_embedding == 'rope' and self.head_dim % 2:
            raise ValueError(f'config.model.head_dim={self.head_dim}: RoPE needs an even head_dim.')
        if not isinstance(self.text_embedding_dim, int) or self.text_embedding_dim < 0:
            raise ValueError(f'config.model.text_embedding_dim={self.text_embedding_dim!r}: expected an integer >= 0.')
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f'config.model.dropout_rate={self.dropout_rate}: expected a value in [0, 1).')
        grid, span = self.visual_grid, self.visual_range
        if not (isinstance(grid, tuple) and len(grid) == 2 and all(isinstance(v, int) for v in grid)
                and (grid == (0, 0) or min(grid) > 0)):
            raise ValueError(f'config.model.visual_grid={grid!r}: expected (h, w) of the latent grid, both '
                             'positive, or (0, 0) for no grid embedding.')
        if (grid != (0, 0) or self.visual_bit_embedding) and not (
                isinstance(span, tuple) and len(span) == 2 and 0 <= span[0] < span[1] <= self.vocab_size):
            raise ValueError(f'config.model.visual_range={span!r}: expected the visual ids [low, high) within '
                             f'[0, vocab_size={self.vocab_size}] (filled from the data vocabulary).')
        size = span[1] - span[0]
        if self.visual_bit_embedding and (size < 2 or size & (size - 1)):
            raise ValueError(f'config.model.visual_bit_embedding needs 2**bits visual ids (bits >= 1); '
                             f'visual_range={span!r} has {size}.')
        if self.rope_theta <= 0 or self.norm_epsilon <= 0:
            raise ValueError(f'config.model.rope_theta={self.rope_theta} and norm_epsilon={self.norm_epsilon} '
                             'must be positive.')


def default_model_config() -> ml_collections.ConfigDict:
    """A small default `config.model` (the shape bench/train_step.py compares with MaxText)."""
    fields = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}
    fields.update(vocab_size=4096, num_layers=4, d_model=256, num_heads=4, head_dim=64, mlp_dim=1024,
                  max_length=512)
    return ml_collections.ConfigDict(fields)
