"""Training losses of MAGVIT-v2 besides the LFQ terms (those live in `lfq.py`).

All take videos [batch, time, height, width, channels] in [-1, 1] and discriminator logits
[batch]; each returns a scalar averaged over the batch.
"""
from typing import Callable

import jax
import jax.numpy as jnp


def reconstruction_l2(video: jax.Array, reconstruction: jax.Array) -> jax.Array:
  """Mean squared error over every pixel and channel."""
  return jnp.mean(jnp.square(reconstruction.astype(jnp.float32) - video.astype(jnp.float32)))


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss: -log sigmoid(D(fake))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Logistic discriminator loss: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def r1_penalty(discriminator_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """E ||d D(x) / d x||^2 on real data (Mescheder et al. 2018); the caller multiplies by gamma/2."""
  grads = jax.grad(lambda x: jnp.sum(discriminator_fn(x)))(real)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


def lecam_penalty(real_logits: jax.Array, fake_logits: jax.Array, ema_real: jax.Array,
                  ema_fake: jax.Array) -> jax.Array:
  """LeCam regulariser (Tseng et al. 2021): keeps D(real) and D(fake) near the other's EMA."""
  return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake_logits))))


def psnr_from_mse(mse: jax.Array, peak: float = 2.0) -> jax.Array:
  """PSNR in dB for an MSE measured on signals with range `peak` (2 for [-1, 1])."""
  return 10.0 * jnp.log10(peak**2 / jnp.maximum(mse, 1e-12))
