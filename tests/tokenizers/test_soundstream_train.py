"""SoundStream training: the loss falls, checkpoints round-trip into AudioTokenizer, runs resume."""
import os

import jax
import numpy as np
import pytest

from vp_jax.checkpointing import Checkpointer
from vp_jax.config import load_config_file
from vp_tokenizers.soundstream import train as train_lib
from vp_tokenizers.soundstream.api import AudioTokenizer


DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "soundstream_demo.py")


def quick_config(**train_overrides):
    config = load_config_file(DEMO_CONFIG, "quick")
    config.train.update(train_overrides)
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """20 steps of the quick config on demo-like audio, logged every 2 steps, saved at 10 and 20."""
    workdir = str(tmp_path_factory.mktemp("soundstream"))
    state = train_lib.train(quick_config(), workdir)
    return workdir, state


def logged_scalars(logdir, tag):
    """{step: value} of one scalar from the TensorBoard event files Progress wrote."""
    import tensorflow as tf
    values = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_short_training_lowers_the_loss(trained_run):
    losses = logged_scalars(f"{trained_run[0]}/tensorboard", "loss")
    assert sorted(losses) == list(range(2, 21, 2))
    first, last = np.mean([losses[2], losses[4]]), np.mean([losses[16], losses[18], losses[20]])
    assert last < 0.92 * first, losses
    held_out = logged_scalars(f"{trained_run[0]}/tensorboard", "eval/si_snr_db/4_levels")
    assert sorted(held_out) == [10, 20]


def test_checkpoint_loads_as_an_audio_tokenizer_with_the_trained_weights(trained_run):
    workdir, state = trained_run
    tokenizer = AudioTokenizer.load(f"{workdir}/checkpoints")
    assert tokenizer.levels == 4 and tokenizer.codebook_size == 16 and tokenizer.hop_length == 640
    assert tokenizer.checkpoint_id.endswith("@20")
    np.testing.assert_array_equal(jax.device_get(tokenizer.variables["params"]["encoder"]["input_conv"]["kernel"]),
                                  jax.device_get(state.params["encoder"]["input_conv"]["kernel"]))
    np.testing.assert_array_equal(jax.device_get(tokenizer.variables["codebook"]["quantizer"]["codebooks"]),
                                  jax.device_get(state.codebook["quantizer"]["codebooks"]))


def test_demo_clip_gives_exact_frame_counts_and_lengths(trained_run):
    tokenizer = AudioTokenizer.load(f"{trained_run[0]}/checkpoints")
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 34000)).astype(np.float32)
    ids = tokenizer.encode(wave)
    assert ids.shape == (2, 4, tokenizer.num_frames(34000)) == (2, 4, 53) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < 16
    assert tokenizer.decode(ids).shape == (2, 53 * 640)
    coarse = tokenizer.decode(ids[:, :1])
    assert coarse.shape == (2, 53 * 640) and not np.allclose(coarse, tokenizer.decode(ids))
    np.testing.assert_array_equal(tokenizer.encode(wave[:, :53 * 640]), ids)  # the tail is cropped


def test_bad_tokenizer_inputs_are_rejected(trained_run):
    tokenizer = AudioTokenizer.load(f"{trained_run[0]}/checkpoints")
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        tokenizer.decode(np.full((1, 4, 3), 16, np.int32))
    with pytest.raises(ValueError, match="1..4 levels"):
        tokenizer.decode(np.zeros((1, 5, 3), np.int32))
    with pytest.raises(ValueError, match=r"float \[batch, samples\]"):
        tokenizer.encode(np.zeros(6400, np.float32))
    with pytest.raises(ValueError, match="shorter than one frame"):
        tokenizer.encode(np.zeros((1, 100), np.float32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioTokenizer.load(f"{trained_run[0]}/no_such_dir")


@pytest.mark.slow
def test_training_resumes_from_the_latest_checkpoint(trained_run, capsys):
    workdir, _ = trained_run
    train_lib.train(quick_config(num_steps=24), workdir)
    assert "resumed from" in capsys.readouterr().out
    with Checkpointer(f"{workdir}/checkpoints") as checkpointer:
        assert checkpointer.latest_step() == 24
        assert checkpointer.restore_metadata()["data"]["resume_step"] == 24


def test_crop_that_is_not_a_multiple_of_the_hop_is_rejected(tmp_path):
    config = quick_config()
    config.data.crop_samples = 1000
    with pytest.raises(ValueError, match="crop_samples=1000 must be a multiple of the hop length"):
        train_lib.train(config, str(tmp_path))


@pytest.mark.slow
def test_adversarial_training_with_learned_codebooks_runs_and_saves(tmp_path):
    config = quick_config(num_steps=4, eval_every_steps=4, checkpoint_every_steps=4)
    config.model.codebook_kind = "learned"
    config.loss.adversarial_weight = 1.0
    config.loss.feature_matching_weight = 10.0
    config.discriminator.channels = 4
    state = train_lib.train(config, str(tmp_path))
    assert int(state.step) == 4 and state.disc_params and not state.codebook
    tokenizer = AudioTokenizer.load(str(tmp_path / "checkpoints"))
    assert set(tokenizer.variables) == {"params"}
