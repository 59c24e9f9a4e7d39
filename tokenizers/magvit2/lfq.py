"""Lookup-free quantization (LFQ), the quantizer of MAGVIT-v2.

Each of the K latent channels is quantized on its own to sign(z) in {-1, +1}; the token id
is the integer whose bit k is set when z_k > 0, so the vocabulary is 2^K without any
codebook table to look up or learn:

    z   = [ 0.3, -1.2,  2.0]          # one latent vector, K = 3
    q   = [ +1 ,  -1 ,  +1 ]
    id  = 1*1 + 0*2 + 1*4 = 5

Gradients pass straight through the sign. Two auxiliary losses shape z:
commitment 0.25 * ||z - sg(q)||^2, and an entropy penalty
mean_n H(p(.|z_n)) - H(mean_n p(.|z_n)), where p(c|z) = softmax_c(-||z - c||^2 / tau) over
all 2^K codes c. The first term makes each vector confident, the second spreads the batch
over the whole vocabulary.

The softmax over codes factorises over bits: -||z - c||^2 = 2 z.c + const, so
p(c|z) = prod_k sigmoid(4 z_k c_k / tau). The per-sample entropy is therefore an exact sum
of K binary entropies. The batch-mean distribution does not factorise; for large K (K=18
would need a [batch, 262144] table) we split the bits into groups of at most
`group_bits` and sum the entropies of the group marginals. That sum is an upper bound of
the joint entropy and equals it when K <= group_bits.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_BITS = 31  # ids are int32


def _check_bits(num_bits: int) -> None:
  if not isinstance(num_bits, (int, np.integer)) or not 1 <= num_bits <= MAX_BITS:
    raise ValueError(f"LFQ num_bits must be an int in [1, {MAX_BITS}], got {num_bits!r}")


def ids_from_latents(z: jax.Array) -> jax.Array:
  """[..., K] float latents -> int32 ids [...] with bit k set where z_k > 0."""
  _check_bits(z.shape[-1])
  weights = (2 ** jnp.arange(z.shape[-1], dtype=jnp.uint32)).astype(jnp.int32)
  return jnp.sum(jnp.where(z > 0, weights, 0), axis=-1, dtype=jnp.int32)


def bits_from_ids(ids: jax.Array, num_bits: int, dtype=jnp.float32) -> jax.Array:
  """int ids [...] -> codes [..., K] in {-1, +1}, the inverse of `ids_from_latents`."""
  _check_bits(num_bits)
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"LFQ ids must be integers, got dtype {ids.dtype}")
  shifts = jnp.arange(num_bits, dtype=jnp.int32)
  bits = (ids[..., None].astype(jnp.int32) >> shifts) & 1
  return (2 * bits - 1).astype(dtype)


def check_ids_in_range(ids: np.ndarray, num_bits: int, name: str = "ids") -> None:
  """Raises ValueError naming the offending value if an id is outside [0, 2^num_bits)."""
  ids = np.asarray(ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise TypeError(f"{name} must be an integer array, got dtype {ids.dtype}")
  if ids.size and (ids.min() < 0 or ids.max() >= 2**num_bits):
    bad = ids.min() if ids.min() < 0 else ids.max()
    raise ValueError(f"{name} must lie in [0, 2**{num_bits}) = [0, {2**num_bits}), found {bad}")


def quantize(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[..., K] latents -> (straight-through codes [..., K] in {-1,+1}, int32 ids [...])."""
  q = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
  q_st = z + jax.lax.stop_gradient(q - z)
  return q_st, ids_from_latents(z)


def _binary_entropy_from_logits(logits: jax.Array) -> jax.Array:
  """Entropy (nats) of Bernoulli(sigmoid(logits)), elementwise and stable for large |logits|."""
  p = jax.nn.sigmoid(logits)
  return -(p * jax.nn.log_sigmoid(logits) + (1 - p) * jax.nn.log_sigmoid(-logits))


def bit_groups(num_bits: int, group_bits: int) -> list[tuple[int, int]]:
  """Splits bit indices [0, K) into contiguous (start, stop) groups of near-equal size <= group_bits."""
  _check_bits(num_bits)
  if group_bits < 1:
    raise ValueError(f"LFQ entropy group_bits must be >= 1, got {group_bits}")
  num_groups = -(-num_bits // group_bits)
  edges = np.linspace(0, num_bits, num_groups + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _group_code_log_probs(logits: jax.Array) -> jax.Array:
  """Per-bit logits [N, g] -> log p(c) [N, 2^g] of the factorised code distribution."""
  g = logits.shape[-1]
  pos = ((np.arange(2**g)[:, None] >> np.arange(g)) & 1).astype(np.float32)  # [2^g, g]: bit k set
  neg = 1.0 - pos
  return jax.nn.log_sigmoid(logits) @ pos.T + jax.nn.log_sigmoid(-logits) @ neg.T


class EntropyTerms(NamedTuple):
  per_sample_entropy: jax.Array  # scalar: mean_n H(p(.|z_n)), nats
  codebook_entropy: jax.Array    # scalar: H(mean_n p(.|z_n)) (group-factorised), nats


def entropy_terms(z: jax.Array, temperature: float = 0.01, group_bits: int = 12) -> EntropyTerms:
  """Both entropy terms of the LFQ penalty for latents z [..., K] (all leading dims are samples)."""
  if temperature <= 0:
    raise ValueError(f"LFQ entropy temperature must be > 0, got {temperature}")
  num_bits = z.shape[-1]
  logits = 4.0 * z.reshape(-1, num_bits).astype(jnp.float32) / temperature
  per_sample = jnp.mean(jnp.sum(_binary_entropy_from_logits(logits), axis=-1))
  codebook = 0.0
  for start, stop in bit_groups(num_bits, group_bits):
    mean_probs = jnp.mean(jnp.exp(_group_code_log_probs(logits[:, start:stop])), axis=0)
    codebook += -jnp.sum(mean_probs * jnp.log(jnp.maximum(mean_probs, 1e-30)))
  return EntropyTerms(per_sample, jnp.asarray(codebook))


def entropy_loss(z: jax.Array, temperature: float = 0.01, group_bits: int = 12) -> jax.Array:
  """The LFQ entropy penalty: per-sample entropy minus codebook entropy (lower is better)."""
  terms = entropy_terms(z, temperature, group_bits)
  return terms.per_sample_entropy - terms.codebook_entropy


def commitment_loss(z: jax.Array) -> jax.Array:
  """Mean over elements of (z - sg(sign(z)))^2: pulls latents towards their codes."""
  q = jax.lax.stop_gradient(jnp.where(z > 0, 1.0, -1.0))
  return jnp.mean(jnp.square(z.astype(jnp.float32) - q))


def entropy_weight(step, base_weight: float, start_multiplier: float, anneal_steps: int):
  """Entropy weight annealed linearly from base*start_multiplier at step 0 to base at anneal_steps."""
  if anneal_steps <= 0:
    return jnp.asarray(base_weight, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)
  return base_weight * (start_multiplier + (1.0 - start_multiplier) * frac)


def codebook_usage(ids: jax.Array, num_bits: int) -> dict[str, jax.Array]:
  """Fraction of the 2^K codes that occur in `ids`, and the perplexity exp(H(histogram))."""
  counts = jnp.zeros((2**num_bits,), jnp.float32).at[ids.reshape(-1)].add(1.0)
  probs = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0))
  return {"codebook_usage": jnp.mean(counts > 0), "codebook_perplexity": jnp.exp(entropy)}
