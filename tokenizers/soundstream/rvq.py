"""Residual vector quantizer (RVQ) for SoundStream.

Why residual: level 1 quantizes the latent, level l quantizes what levels 1..l-1 left over,
so the first few levels already give a coarse reconstruction and quantizer dropout (using
only the first n_q levels for some training examples) lets one model serve several bit
rates. VideoPoet uses 4 levels of 1024 codes.

Shapes: latents z [batch, frames, dim]; ids [batch, frames, levels] int32 (the public
tokenizer API transposes to [batch, levels, frames]); codebooks [levels, codebook_size, dim].

Codebooks are either
  * 'ema': kept in the `codebook` collection and updated by exponential moving averages of
    the assigned latents (no gradient), with Laplace smoothing, and dead codes (EMA usage
    below `dead_code_threshold`) restarted from random latents of the current batch; or
  * 'learned': kept in `params` and trained by the VQ-VAE codebook loss.
Both start from random normal codes; `kmeans_codebooks` gives a data-driven start that the
trainer writes in with `set_codebooks` before the first step.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

CODEBOOK_KINDS = ("ema", "learned")


def nearest_code(vectors: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the closest code. vectors [n, dim], codebook [k, dim] -> int32 [n]."""
    distances = (
        jnp.sum(vectors**2, axis=-1, keepdims=True)
        - 2.0 * vectors @ codebook.T
        + jnp.sum(codebook**2, axis=-1)[None, :])
    return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def kmeans_codebooks(vectors: jax.Array, levels: int, codebook_size: int, rng: jax.Array,
                     iterations: int = 10) -> jax.Array:
    """Residual k-means: level l clusters the residual left by levels < l.

    vectors [n, dim] -> codebooks [levels, codebook_size, dim]. Centres start at random
    vectors (drawn with replacement when n < codebook_size, plus small noise so they
    differ); empty clusters keep their previous centre.
    """
    vectors = vectors.astype(jnp.float32)
    n, dim = vectors.shape
    residual = vectors
    codebooks = []
    for level_rng in jax.random.split(rng, levels):
        pick_rng, noise_rng = jax.random.split(level_rng)
        picks = jax.random.choice(pick_rng, n, (codebook_size,), replace=n < codebook_size)
        scale = jnp.std(residual) + 1e-6
        centres = residual[picks] + 1e-3 * scale * jax.random.normal(noise_rng, (codebook_size, dim))

        def lloyd_step(_, centres, residual=residual):
            one_hot = jax.nn.one_hot(nearest_code(residual, centres), codebook_size)
            counts = one_hot.sum(axis=0)
            sums = one_hot.T @ residual
            return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)

        centres = jax.lax.fori_loop(0, iterations, lloyd_step, centres)
        residual = residual - centres[nearest_code(residual, centres)]
        codebooks.append(centres)
    return jnp.stack(codebooks)


class ResidualVectorQuantizer(nn.Module):
    """RVQ with EMA or learned codebooks, dead-code restarts and quantizer dropout.

    Attributes:
      levels: number of residual levels (paper: 4).
      codebook_size: codes per level (paper: 1024).
      dim: latent width.
      codebook_kind: 'ema' or 'learned'.
      ema_decay: EMA decay of code usage and code sums ('ema' only).
      dead_code_threshold: codes whose EMA usage falls below this fraction of the uniform
        share (total usage / codebook_size) are restarted from random latents of the
        current batch ('ema' only; 0 disables).
      dropout_rate: fraction of training examples that use a random number of levels
        n_q ~ U{1..levels} instead of all of them (SoundStream's quantizer dropout).
    """
    levels: int
    codebook_size: int
    dim: int
    codebook_kind: str = "ema"
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03
    dropout_rate: float = 0.0
    epsilon: float = 1e-5

    def setup(self):
        if self.codebook_kind not in CODEBOOK_KINDS:
            raise ValueError(f"ResidualVectorQuantizer.codebook_kind={self.codebook_kind!r}, "
                             f"expected one of {CODEBOOK_KINDS}")
        if self.levels < 1 or self.codebook_size < 2:
            raise ValueError(f"ResidualVectorQuantizer: levels={self.levels} must be >= 1 and "
                             f"codebook_size={self.codebook_size} >= 2")
        shape = (self.levels, self.codebook_size, self.dim)
        if self.codebook_kind == "learned":
            self.learned_codebooks = self.param("codebooks", nn.initializers.normal(1.0), shape)
        else:
            self.ema_codebooks = self.variable(
                "codebook", "codebooks",
                lambda: jax.random.normal(self.make_rng("params"), shape))
            self.ema_usage = self.variable(
                "codebook", "usage", lambda: jnp.ones((self.levels, self.codebook_size)))
            self.ema_sums = self.variable(
                "codebook", "sums", lambda: self.ema_codebooks.value)

    def codebooks(self) -> jax.Array:
        """[levels, codebook_size, dim]."""
        if self.codebook_kind == "learned":
            return self.learned_codebooks
        return self.ema_codebooks.value

    def set_codebooks(self, codebooks: jax.Array) -> None:
        """Overwrites the codebooks (e.g. with `kmeans_codebooks`); call with the codebook
        collection ('ema') or params ('learned') mutable."""
        if codebooks.shape != (self.levels, self.codebook_size, self.dim):
            raise ValueError(f"set_codebooks: got shape {codebooks.shape}, expected "
                             f"{(self.levels, self.codebook_size, self.dim)}")
        if self.codebook_kind == "learned":
            raise NotImplementedError(
                "learned codebooks live in params: replace params['codebooks'] directly")
        self.ema_codebooks.value = codebooks
        self.ema_sums.value = codebooks
        self.ema_usage.value = jnp.ones((self.levels, self.codebook_size))

    def decode_ids(self, ids: jax.Array, num_levels: jax.Array | int | None = None) -> jax.Array:
        """ids int32 [batch, frames, n] with n <= levels -> latents [batch, frames, dim].

        Only the first `num_levels` levels (default: all n given) are summed, for a lower bit
        rate; `num_levels` may be a traced scalar, so one compiled program serves every rate.
        """
        codebooks = self.codebooks()
        n = ids.shape[-1]
        num_levels = n if num_levels is None else num_levels
        return sum(jnp.where(level < num_levels, 1.0, 0.0) * codebooks[level][ids[..., level]]
                   for level in range(n))

    def active_levels(self, batch: int, train: bool, num_levels: int | None) -> jax.Array:
        """int32 [batch]: how many levels each example uses."""
        full = jnp.full((batch,), self.levels if num_levels is None else num_levels, jnp.int32)
        if not train or self.dropout_rate <= 0.0:
            return full
        rng_pick, rng_levels = jax.random.split(self.make_rng("quantizer"))
        dropped = jax.random.bernoulli(rng_pick, self.dropout_rate, (batch,))
        random_levels = jax.random.randint(rng_levels, (batch,), 1, self.levels + 1)
        return jnp.where(dropped, random_levels, full)

    def __call__(self, z: jax.Array, train: bool = False, num_levels: int | None = None) -> dict:
        """Quantizes z [batch, frames, dim].

        Returns a dict with
          quantized [batch, frames, dim]: straight-through (value = sum of the active codes,
            gradient = identity to z),
          ids int32 [batch, frames, levels] (ids of inactive levels are still computed),
          commitment_loss: mean over active levels of ||r_l - sg(q_l)||^2,
          codebook_loss: mean over active levels of ||sg(r_l) - q_l||^2 ('learned'; else 0),
          usage_fraction [levels]: fraction of codes used in this batch (diagnostic).
        In training with the `codebook` collection mutable, EMA codebooks are updated and
        dead codes restarted (needs the `quantizer` rng).
        """
        batch, frames, dim = z.shape
        if dim != self.dim:
            raise ValueError(f"ResidualVectorQuantizer: latent width {dim} != dim {self.dim}")
        if num_levels is not None and not 1 <= num_levels <= self.levels:
            raise ValueError(f"ResidualVectorQuantizer: num_levels={num_levels} outside [1, {self.levels}]")
        z = z.astype(jnp.float32)
        codebooks = self.codebooks()
        active = self.active_levels(batch, train, num_levels)
        z_flat = z.reshape(-1, dim)
        residual = jax.lax.stop_gradient(z_flat)   # what level l quantizes, no gradient
        codes_before = jnp.zeros_like(z_flat)      # sum of the codes of levels < l
        quantized = jnp.zeros_like(z_flat)
        ids, counts, commitment, codebook_loss, usage = [], [], [], [], []
        for level in range(self.levels):
            level_ids = nearest_code(residual, jax.lax.stop_gradient(codebooks[level]))
            codes = codebooks[level][level_ids]
            mask = jnp.repeat(level < active, frames).astype(jnp.float32)
            denominator = jnp.maximum(mask.sum() * dim, 1.0)
            # Commitment gradient reaches z through r_l = z - sg(codes of earlier levels).
            commitment.append(jnp.sum(mask[:, None] * (z_flat - codes_before - jax.lax.stop_gradient(codes)) ** 2)
                              / denominator)
            codebook_loss.append(jnp.sum(mask[:, None] * (residual - codes) ** 2) / denominator)
            one_hot = jax.nn.one_hot(level_ids, self.codebook_size) * mask[:, None]
            usage.append(jnp.mean((one_hot.sum(axis=0) > 0).astype(jnp.float32)))
            if train and self.codebook_kind == "ema" and self.is_mutable_collection("codebook"):
                self._ema_update(level, residual, one_hot)
            codes = jax.lax.stop_gradient(codes)
            quantized = quantized + mask[:, None] * codes
            codes_before = codes_before + codes
            residual = residual - codes
            ids.append(level_ids)
            counts.append(mask.sum())
        counts = jnp.stack(counts)
        level_weights = counts / jnp.maximum(counts.sum(), 1.0)
        quantized = quantized.reshape(batch, frames, dim)
        return {
            "quantized": z + jax.lax.stop_gradient(quantized - z),
            "ids": jnp.stack(ids, axis=-1).reshape(batch, frames, self.levels),
            "commitment_loss": jnp.sum(level_weights * jnp.stack(commitment)),
            # Learned codebooks train from this loss alone (the output is straight-through).
            "codebook_loss": (jnp.sum(level_weights * jnp.stack(codebook_loss))
                              if self.codebook_kind == "learned" else jnp.zeros((), jnp.float32)),
            "usage_fraction": jnp.stack(usage),
        }

    def _ema_update(self, level: int, residual: jax.Array, one_hot: jax.Array) -> None:
        """EMA of usage and sums for one level, Laplace smoothing, dead-code restarts.

        residual [n, dim] (the vectors this level quantized), one_hot [n, codebook_size]
        already zeroed for examples where the level is dropped.
        """
        decay, k = self.ema_decay, self.codebook_size
        usage = self.ema_usage.value[level] * decay + (1 - decay) * one_hot.sum(axis=0)
        sums = self.ema_sums.value[level] * decay + (1 - decay) * (one_hot.T @ residual)
        total = usage.sum()
        smoothed = (usage + self.epsilon) / (total + k * self.epsilon) * total
        codebook = sums / smoothed[:, None]
        if self.dead_code_threshold > 0:
            # A restarted code gets the uniform share of usage: a grace period of about
            # log(1 / threshold) / (1 - decay) steps before it can be declared dead again.
            share = total / k
            picks = jax.random.randint(self.make_rng("quantizer"), (k,), 0, residual.shape[0])
            dead = usage < self.dead_code_threshold * share
            codebook = jnp.where(dead[:, None], residual[picks], codebook)
            sums = jnp.where(dead[:, None], residual[picks] * share, sums)
            usage = jnp.where(dead, share, usage)
        self.ema_usage.value = self.ema_usage.value.at[level].set(usage)
        self.ema_sums.value = self.ema_sums.value.at[level].set(sums)
        self.ema_codebooks.value = self.ema_codebooks.value.at[level].set(codebook)
