"""Adversarial losses and the 3D discriminator."""
import jax
import jax.numpy as jnp
import numpy as np

from vp_tokenizers.magvit2 import losses
from vp_tokenizers.magvit2.discriminator import Discriminator


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 4, 4, 3)), jnp.float32)
  real = jnp.ones((3, 2, 4, 4, 3))
  penalty = losses.r1_penalty(lambda x: jnp.sum(x * w, axis=(1, 2, 3, 4)), real)
  np.testing.assert_allclose(penalty, jnp.sum(w * w), rtol=1e-5)


def test_non_saturating_losses_at_known_logits():
  np.testing.assert_allclose(losses.generator_adversarial_loss(jnp.zeros(4)), np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss(jnp.zeros(4), jnp.zeros(4)), 2 * np.log(2.0),
                             rtol=1e-6)
  assert float(losses.discriminator_loss(jnp.full(4, 10.0), jnp.full(4, -10.0))) < 1e-3


def test_lecam_penalises_only_logits_past_the_other_side_ema():
  assert float(losses.lecam_penalty(jnp.array([0.5]), jnp.array([0.5]), 1.0, 0.0)) == 0.25 + 0.25
  assert float(losses.lecam_penalty(jnp.array([-1.0]), jnp.array([1.0]), -2.0, 0.0)) == 0.0


def test_psnr_from_mse_on_minus_one_to_one_signals():
  np.testing.assert_allclose(losses.psnr_from_mse(jnp.asarray(0.04)), 20.0, rtol=1e-6)


def test_one_discriminator_scores_images_and_videos_of_any_aspect():
  disc = Discriminator(base_channels=4, channel_multipliers=(2, 2))
  params = jax.jit(disc.init)(jax.random.PRNGKey(0), jnp.zeros((1, 1, 16, 16, 3)))
  for shape in [(2, 1, 16, 16, 3), (1, 5, 24, 16, 3)]:
    assert jax.jit(disc.apply)(params, jnp.zeros(shape)).shape == (shape[0],)
