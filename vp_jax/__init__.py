"""vp-jax."""
