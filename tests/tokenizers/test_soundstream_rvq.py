"""Residual vector quantizer: round trips, levels, quantizer dropout, EMA and dead-code restarts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_tokenizers.soundstream.rvq import ResidualVectorQuantizer, kmeans_codebooks, nearest_code


def clustered_latents(n=512, dim=4, clusters=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    return jnp.asarray(centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim)),
                       jnp.float32)


def init_rvq(rvq, z):
    return rvq.init({"params": jax.random.key(0), "quantizer": jax.random.key(1)}, z)


def test_ids_decode_back_to_the_quantized_latents():
    rvq = ResidualVectorQuantizer(levels=3, codebook_size=16, dim=4)
    z = clustered_latents().reshape(8, 64, 4)
    variables = init_rvq(rvq, z)
    out = rvq.apply(variables, z)
    assert out["ids"].shape == (8, 64, 3) and out["ids"].dtype == jnp.int32
    decoded = rvq.apply(variables, out["ids"], method=rvq.decode_ids)
    np.testing.assert_allclose(decoded, out["quantized"], atol=1e-5)


def test_each_added_level_reduces_quantization_error():
    z = clustered_latents()
    codebooks = kmeans_codebooks(z, levels=4, codebook_size=8, rng=jax.random.key(0))
    rvq = ResidualVectorQuantizer(levels=4, codebook_size=8, dim=4)
    variables = init_rvq(rvq, z[None])
    _, variables = rvq.apply(variables, codebooks, method=rvq.set_codebooks, mutable=["codebook"])
    errors = [float(jnp.mean((rvq.apply(variables, z[None], num_levels=n)["quantized"] - z) ** 2))
              for n in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] < 0.2 * float(jnp.mean(z**2))


def test_kmeans_first_level_finds_the_clusters():
    z = clustered_latents(clusters=8)
    codebooks = kmeans_codebooks(z, levels=1, codebook_size=8, rng=jax.random.key(3), iterations=20)
    ids = nearest_code(z, codebooks[0])
    residual = z - codebooks[0][ids]
    assert float(jnp.mean(residual**2)) < 0.5


def test_quantizer_dropout_keeps_a_prefix_of_levels_per_example():
    rvq = ResidualVectorQuantizer(levels=4, codebook_size=16, dim=4, dropout_rate=1.0,
                                  dead_code_threshold=0.0)
    z = clustered_latents(n=32 * 10).reshape(32, 10, 4)
    variables = init_rvq(rvq, z)
    out = rvq.apply(variables, z, train=True, rngs={"quantizer": jax.random.key(5)})
    decode = jax.jit(lambda ids, n: rvq.apply(variables, ids, n, method=rvq.decode_ids))
    used_levels = []
    for example in range(32):
        matches = [n for n in range(1, 5) if np.allclose(
            decode(out["ids"][example:example + 1], n), out["quantized"][example:example + 1], atol=1e-5)]
        assert len(matches) >= 1
        used_levels.append(matches[0])
    assert len(set(used_levels)) >= 3, used_levels  # several bit rates in one batch


def test_without_dropout_or_training_all_levels_are_used():
    rvq = ResidualVectorQuantizer(levels=3, codebook_size=16, dim=4, dropout_rate=1.0)
    z = clustered_latents(n=40).reshape(4, 10, 4)
    variables = init_rvq(rvq, z)
    out = rvq.apply(variables, z, train=False)
    np.testing.assert_allclose(rvq.apply(variables, out["ids"], method=rvq.decode_ids),
                               out["quantized"], atol=1e-5)


def test_ema_training_pulls_codes_onto_the_data():
    rvq = ResidualVectorQuantizer(levels=1, codebook_size=8, dim=4, ema_decay=0.8)
    z = clustered_latents(clusters=8)[None]
    variables = init_rvq(rvq, z)
    before = float(rvq.apply(variables, z)["commitment_loss"])
    for step in range(30):
        _, mutated = rvq.apply(variables, z, train=True, rngs={"quantizer": jax.random.key(step)},
                               mutable=["codebook"])
        variables = {**variables, **mutated}
    after = float(rvq.apply(variables, z)["commitment_loss"])
    assert after < 0.1 * before, (before, after)


def test_dead_codes_restart_from_batch_latents():
    rvq = ResidualVectorQuantizer(levels=1, codebook_size=8, dim=2, ema_decay=0.5,
                                  dead_code_threshold=0.5)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 2)) + 100.0, jnp.float32)
    variables = init_rvq(rvq, z)  # codes near 0: one wins every latent, the others starve
    for step in range(6):
        _, mutated = rvq.apply(variables, z, train=True, rngs={"quantizer": jax.random.key(step)},
                               mutable=["codebook"])
        variables = {**variables, **mutated}
    codebook = np.asarray(variables["codebook"]["codebooks"][0])
    assert np.all(np.abs(codebook - 100.0) < 5.0), codebook


def test_learned_codebooks_receive_codebook_loss_gradients():
    rvq = ResidualVectorQuantizer(levels=2, codebook_size=8, dim=4, codebook_kind="learned")
    z = clustered_latents(n=64).reshape(2, 32, 4)
    variables = init_rvq(rvq, z)

    def loss(params):
        out = rvq.apply({"params": params}, z, train=True, rngs={"quantizer": jax.random.key(0)})
        return out["codebook_loss"]

    grads = jax.grad(loss)(variables["params"])
    assert float(jnp.abs(grads["codebooks"]).sum()) > 0


def test_bad_settings_and_shapes_are_rejected():
    z = clustered_latents(n=8).reshape(1, 8, 4)
    with pytest.raises(ValueError, match="codebook_kind"):
        init_rvq(ResidualVectorQuantizer(levels=1, codebook_size=8, dim=4, codebook_kind="vq"), z)
    rvq = ResidualVectorQuantizer(levels=2, codebook_size=8, dim=4)
    variables = init_rvq(rvq, z)
    with pytest.raises(ValueError, match="latent width 3"):
        rvq.apply(variables, z[..., :3])
    with pytest.raises(ValueError, match="num_levels=3"):
        rvq.apply(variables, z, num_levels=3)
