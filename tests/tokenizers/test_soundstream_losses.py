"""SI-SNR, log-mel distance and the multi-scale spectral loss behave as metrics should."""
import jax.numpy as jnp
import numpy as np

from vp_tokenizers.soundstream import losses


def tone(freq=440.0, samples=4000, rate=16000, phase=0.0):
    return np.sin(2 * np.pi * freq * np.arange(samples) / rate + phase).astype(np.float32)[None]


def test_si_snr_ignores_scale_and_falls_with_noise():
    clean = jnp.asarray(tone())
    noise = jnp.asarray(np.random.default_rng(0).normal(size=clean.shape).astype(np.float32))
    assert float(losses.si_snr(clean, 0.3 * clean)[0]) > 60  # a scaled copy is a perfect estimate
    quiet = float(losses.si_snr(clean, clean + 0.01 * noise)[0])
    loud = float(losses.si_snr(clean, clean + 0.3 * noise)[0])
    assert quiet > 30 and 0 < loud < quiet


def test_si_snr_punishes_phase_errors():
    shifted = float(losses.si_snr(jnp.asarray(tone()), jnp.asarray(tone(phase=np.pi / 2)))[0])
    assert shifted < 0


def test_log_mel_distance_is_zero_for_identical_audio_and_grows_with_pitch_change():
    a = jnp.asarray(tone(440))
    assert float(losses.log_mel_distance(a, a, 16000)[0]) < 1e-6
    near = float(losses.log_mel_distance(a, jnp.asarray(tone(460)), 16000)[0])
    far = float(losses.log_mel_distance(a, jnp.asarray(tone(2000)), 16000)[0])
    assert 0 < near < far


def test_spectral_loss_is_zero_for_identical_audio_and_phase_tolerant():
    a = jnp.asarray(tone())
    assert float(losses.multiscale_spectral_loss(a, a, (64, 256))) < 1e-6
    shifted = float(losses.multiscale_spectral_loss(a, jnp.asarray(tone(phase=1.0)), (64, 256)))
    other_pitch = float(losses.multiscale_spectral_loss(a, jnp.asarray(tone(1500)), (64, 256)))
    assert shifted < 0.2 * other_pitch


def test_stft_frame_count_and_bins():
    spectrum = losses.stft(jnp.zeros((2, 1000)), 256)
    assert spectrum.shape == (2, 1000 // 64 + 1, 129)


def test_stft_discriminator_gives_one_logit_per_frame_and_hinge_losses_have_the_right_signs():
    import jax

    from vp_tokenizers.soundstream.discriminator import (StftDiscriminator, discriminator_hinge_loss,
                                                         feature_matching_loss, generator_hinge_loss)
    disc = StftDiscriminator(channels=4, window_size=256, hop=64, channel_multipliers=(1, 2),
                             strides=((1, 2), (2, 2)))
    wave = jnp.asarray(np.concatenate([tone(), tone(880)]))
    variables = disc.init(jax.random.key(0), wave)
    logits, features = disc.apply(variables, wave)
    assert logits.shape == (2, (4000 // 64 + 1 + 1) // 2) and len(features) == 3
    confident_real, confident_fake = jnp.full((2, 3), 2.0), jnp.full((2, 3), -2.0)
    assert float(discriminator_hinge_loss(confident_real, confident_fake)) == 0.0
    assert float(discriminator_hinge_loss(confident_fake, confident_real)) == 6.0
    assert float(generator_hinge_loss(confident_real)) == 0.0 < float(generator_hinge_loss(confident_fake))
    assert float(feature_matching_loss(features, features)) == 0.0
