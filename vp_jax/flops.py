"""Analytic FLOP count of one training step (for MFU and FLOP/s logs).

Matmuls: 6 * N * tokens, N = the matmul parameters a token passes through (attention
projections, MLP, output projection; the embedding lookup is a gather, not a matmul),
2 FLOPs per multiply-add forward and twice that backward. Attention scores and the
weighted sum: 2 matmuls of 2 * head_dim FLOPs per (query, key) pair and head forward, x3
for training, counting only allowed pairs: the prefix fully (P^2, bidirectional), the
output causally (O * P + O * (O + 1) / 2).

Example, the benchmark shape (4 layers, d_model 256, 4 heads x 64, MLP 1024, vocab 4096,
length 512, batch 8, no prefix): N = 4 * (4 * 256 * 256 + 3 * 256 * 1024) + 256 * 4096
= 5,242,880; matmuls 6 * N * 4096 = 128.8 GFLOP; attention 3 * 4 * 4 * 64 * 131,328 * 4 * 8
= 12.9 GFLOP.
"""
from __future__ import annotations

from vp_jax.model_config import TransformerConfig


def matmul_params_per_token(config: TransformerConfig) -> int:
    """Parameters of the matmuls each token goes through (forward)."""
    attention = config.d_model * config.head_dim * (2 * config.num_heads + 2 * config.num_kv_heads)
    mlp = 3 * config.d_model * config.mlp_dim
    return config.num_layers * (attention + mlp) + config.d_model * config.vocab_size


def attended_pairs(length: int, prefix_length: int) -> int:
    """(query, key) pairs one example of `length` positions attends, prefix bidirectional."""
    if not 0 <= prefix_length <= length:
        raise ValueError(f'prefix_length={prefix_length}: expected 0 <= prefix_length <= length={length}.')
    output = length - prefix_length
    return prefix_length * prefix_length + output * prefix_length + output * (output + 1) // 2


def train_step_flops(config: TransformerConfig, batch_size: int, length: int, prefix_length: int = 0) -> float:
    """FLOPs of forward + backward for a [batch_size, length] batch (all examples alike)."""
    tokens = batch_size * length
    matmuls = 6 * matmul_params_per_token(config) * tokens
    attention = 3 * 4 * config.num_heads * config.head_dim * attended_pairs(length, prefix_length)
    return float(matmuls + attention * config.num_layers * batch_size)
