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


def _log_sigmoid(x):
  return np.log(1.0 / (1.0 + np.exp(-x)))


def test_non_saturating_losses_match_log_sigmoid_formulas_on_random_logits():
  rng = np.random.default_rng(0)
  real, fake = rng.uniform(-8, 8, 7), rng.uniform(-8, 8, 5)
  np.testing.assert_allclose(losses.generator_adversarial_loss(jnp.asarray(fake, jnp.float32)),
                             -np.mean(_log_sigmoid(fake)), rtol=1e-5)
  np.testing.assert_allclose(
      losses.discriminator_loss(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)),
      -np.mean(_log_sigmoid(real)) - np.mean(np.log(1.0 - 1.0 / (1.0 + np.exp(-fake)))), rtol=1e-5)


def test_adversarial_losses_stay_finite_and_linear_for_confidently_wrong_logits():
  # -log(sigmoid(-200)) written naively is inf in float32 (sigmoid underflows to 0); it is 200.
  np.testing.assert_allclose(losses.generator_adversarial_loss(jnp.array([-200.0])), 200.0, rtol=1e-6)
  np.testing.assert_allclose(losses.discriminator_loss(jnp.array([-200.0]), jnp.array([200.0])), 400.0,
                             rtol=1e-6)
  grad = jax.grad(losses.generator_adversarial_loss)(jnp.array([-200.0]))
  np.testing.assert_allclose(grad, [-1.0], rtol=1e-6)  # the generator still gets a full gradient


def test_r1_penalty_of_a_discriminator_equals_its_per_clip_input_jacobian_norm_in_forward_mode():
  disc = Discriminator(base_channels=2, channel_multipliers=(1,))
  real = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 4, 4, 3), minval=-1.0, maxval=1.0)

  @jax.jit
  def penalty_and_jacobian(real):
    params = disc.init(jax.random.PRNGKey(0), real)
    apply = lambda x: disc.apply(params, x)
    # Forward mode, one column per input value: jacobian[i, j, ...] = d D(real)_i / d real_j.
    return losses.r1_penalty(apply, real), jax.jacfwd(apply)(real)

  penalty, jacobian = jax.device_get(penalty_and_jacobian(real))
  assert np.abs(jacobian[0, 1]).max() == 0 and np.abs(jacobian[1, 0]).max() == 0  # clips independent
  expected = np.mean([np.sum(np.square(jacobian[i, i].astype(np.float64))) for i in range(2)])
  assert expected > 0
  np.testing.assert_allclose(penalty, expected, rtol=1e-4)


def test_lecam_matches_its_formula_with_the_ema_anchors_on_random_logits():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=6), rng.normal(size=4)
  ema_real, ema_fake = 0.4, -0.3
  # Real logits are pulled down to the fake EMA, fake logits up to the real EMA.
  expected = (np.mean(np.square(np.maximum(real - ema_fake, 0.0)))
              + np.mean(np.square(np.maximum(ema_real - fake, 0.0))))
  assert 0 < np.sum(real < ema_fake) < 6 and 0 < np.sum(fake > ema_real) < 4  # both sides clip
  np.testing.assert_allclose(losses.lecam_penalty(jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32),
                                                  jnp.asarray(ema_real), jnp.asarray(ema_fake)),
                             expected, rtol=1e-5)
