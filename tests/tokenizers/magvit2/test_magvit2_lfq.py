"""LFQ: ids <-> bits, the entropy penalty against a direct 2^K computation, gradients, usage."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_tokenizers.magvit2 import lfq


def test_ids_round_trip_through_bits():
  ids = jnp.arange(2**10, dtype=jnp.int32).reshape(4, 16, 16)
  codes = lfq.bits_from_ids(ids, 10)
  assert codes.shape == (4, 16, 16, 10)
  assert set(np.unique(codes)) == {-1.0, 1.0}
  np.testing.assert_array_equal(lfq.ids_from_latents(codes), ids)


def test_id_sets_bit_k_where_latent_k_is_positive():
  z = jnp.array([[0.3, -1.2, 2.0]])
  assert int(lfq.ids_from_latents(z)[0]) == 1 + 4


def test_ids_of_eighteen_bits_span_the_paper_vocabulary():
  ids = jnp.array([0, 2**18 - 1, 123456], jnp.int32)
  np.testing.assert_array_equal(lfq.ids_from_latents(lfq.bits_from_ids(ids, 18)), ids)


def test_quantize_passes_gradients_straight_through():
  z = jnp.array([[0.3, -1.2, 2.0]])
  q, _ = lfq.quantize(z)
  np.testing.assert_array_equal(q, [[1.0, -1.0, 1.0]])
  grad = jax.grad(lambda z: jnp.sum(lfq.quantize(z)[0] * jnp.array([1.0, 2.0, 3.0])))(z)
  np.testing.assert_allclose(grad, [[1.0, 2.0, 3.0]])


def _direct_entropy_terms(z: np.ndarray, temperature: float):
  """softmax over all 2^K codes of -||z - c||^2 / temperature, computed explicitly."""
  k = z.shape[-1]
  codes = np.array(list(itertools.product([-1.0, 1.0], repeat=k)))
  logits = -np.sum((z[:, None, :] - codes[None]) ** 2, axis=-1) / temperature
  logits -= logits.max(axis=1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(axis=1, keepdims=True)
  entropy = lambda q: -np.sum(np.where(q > 0, q * np.log(np.maximum(q, 1e-300)), 0.0), axis=-1)
  return entropy(p).mean(), entropy(p.mean(axis=0))


@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_entropy_terms_match_direct_computation_on_small_k(temperature):
  z = np.random.default_rng(0).normal(scale=0.05 if temperature < 0.1 else 1.0, size=(64, 5))
  per_sample, codebook = _direct_entropy_terms(z, temperature)
  terms = lfq.entropy_terms(jnp.asarray(z, jnp.float32), temperature, group_bits=12)
  np.testing.assert_allclose(terms.per_sample_entropy, per_sample, rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(terms.codebook_entropy, codebook, rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(lfq.entropy_loss(jnp.asarray(z, jnp.float32), temperature),
                             per_sample - codebook, rtol=1e-3, atol=1e-4)


def test_grouped_codebook_entropy_is_the_sum_of_group_marginal_entropies():
  z = np.random.default_rng(1).normal(scale=0.5, size=(128, 6)).astype(np.float32)
  grouped = lfq.entropy_terms(jnp.asarray(z), 1.0, group_bits=3).codebook_entropy
  expected = sum(_direct_entropy_terms(z[:, a:b], 1.0)[1] for a, b in [(0, 3), (3, 6)])
  np.testing.assert_allclose(grouped, expected, rtol=1e-4)
  exact = lfq.entropy_terms(jnp.asarray(z), 1.0, group_bits=6).codebook_entropy
  assert grouped >= exact - 1e-5  # sum of marginal entropies bounds the joint entropy


def test_eighteen_bit_entropy_runs_without_a_full_code_table():
  z = jax.random.normal(jax.random.PRNGKey(0), (2048, 18))
  terms = jax.jit(lambda z: lfq.entropy_terms(z, 0.01, group_bits=9))(z)
  assert 0.0 <= float(terms.per_sample_entropy) < 18 * np.log(2)
  assert 0.0 < float(terms.codebook_entropy) <= 18 * np.log(2) + 1e-4


def test_bit_groups_cover_all_bits_in_near_equal_groups():
  assert lfq.bit_groups(18, 9) == [(0, 9), (9, 18)]
  assert lfq.bit_groups(10, 4) == [(0, 3), (3, 7), (7, 10)]
  assert lfq.bit_groups(5, 12) == [(0, 5)]


def test_entropy_weight_anneals_from_multiple_to_base():
  weights = [float(lfq.entropy_weight(s, 0.1, 4.0, 2000)) for s in (0, 1000, 2000, 5000)]
  np.testing.assert_allclose(weights, [0.4, 0.25, 0.1, 0.1], rtol=1e-6)


def test_commitment_loss_is_zero_on_codes_and_positive_elsewhere():
  assert float(lfq.commitment_loss(jnp.array([[1.0, -1.0]]))) == 0.0
  np.testing.assert_allclose(lfq.commitment_loss(jnp.array([[0.5, -1.0]])), 0.125)


def test_codebook_usage_and_perplexity_of_uniform_ids():
  stats = lfq.codebook_usage(jnp.array([0, 1, 2, 3, 0, 1, 2, 3]), 3)
  np.testing.assert_allclose(stats["codebook_usage"], 0.5)
  np.testing.assert_allclose(stats["codebook_perplexity"], 4.0, rtol=1e-5)


def test_out_of_range_ids_name_the_value():
  with pytest.raises(ValueError, match=r"\[0, 1024\), found 1024"):
    lfq.check_ids_in_range(np.array([3, 1024]), 10)
  with pytest.raises(ValueError, match="found -1"):
    lfq.check_ids_in_range(np.array([-1]), 10)
  with pytest.raises(ValueError, match="num_bits"):
    lfq.bits_from_ids(jnp.array([1]), 40)
