"""Perceptual networks: Hugging Face ResNet safetensors match transformers; the demo digit network
trains and caches; the tokenizer's step scores the frames it draws."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import ResNetConfig, ResNetForImageClassification

from vp_jax.config import load_config_file
from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import demo_perceptual
from vp_tokenizers.magvit2 import perceptual
from vp_tokenizers.magvit2 import train
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config

_DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "magvit2_demo.py")


@pytest.fixture(scope="module", params=["bottleneck", "basic"])
def hf_resnet(request, tmp_path_factory):
  torch.manual_seed(0)
  config = ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[2, 1],
                        layer_type=request.param, num_labels=5)
  model = ResNetForImageClassification(config).eval()
  with torch.no_grad():  # non-trivial batch-norm statistics
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  path = tmp_path_factory.mktemp(request.param) / "model.safetensors"
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
  return model, str(path)


def test_stage_features_match_transformers_resnet(hf_resnet):
  model, path = hf_resnet
  images = np.random.default_rng(0).normal(size=(2, 3, 40, 40)).astype(np.float32)
  with torch.no_grad():
    expected = model.resnet(torch.from_numpy(images), output_hidden_states=True).hidden_states[1:]
  ours = perceptual.resnet_features(perceptual.load_resnet_weights(path),
                                    jnp.asarray(images.transpose(0, 2, 3, 1)))
  assert len(ours) == len(expected) == 2
  for got, want in zip(ours, expected):
    np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1), atol=2e-4, rtol=2e-4)


def test_perceptual_loss_is_zero_for_identical_videos_and_grows_with_noise(hf_resnet):
  _, path = hf_resnet
  loss = perceptual.make_perceptual_loss(ml_collections.ConfigDict(dict(network="resnet",
                                                                        weights_path=path)), "")
  video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 2, 32, 32, 3)), jnp.float32)
  noise = jnp.asarray(np.random.default_rng(2).normal(size=video.shape), jnp.float32)
  key = jax.random.key(0)
  assert float(loss(video, video, key)) == pytest.approx(0.0, abs=1e-6)
  assert 0 < float(loss(video + 0.1 * noise, video, key)) < float(loss(video + 0.5 * noise, video, key))


def test_frames_per_clip_scores_the_same_random_frames_of_both_videos():
  video = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5, 1, 1, 1) * jnp.ones((1, 1, 2, 2, 3))
  recon = video + 100.0
  for step in range(4):
    r, v = perceptual.pick_frames(recon, video, 2, jax.random.fold_in(jax.random.key(0), step))
    assert r.shape == v.shape == (2, 2, 2, 2, 3)
    np.testing.assert_array_equal(r - 100.0, v)  # the same frames of recon and video
    picked = np.asarray(v[:, :, 0, 0, 0]).astype(int)
    for clip in range(2):  # distinct frames of that clip
      assert len(set(picked[clip])) == 2 and all(clip * 5 <= f < clip * 5 + 5 for f in picked[clip])
  draws = {tuple(np.asarray(perceptual.pick_frames(recon, video, 2, jax.random.key(s))[1][0, :, 0, 0, 0]))
           for s in range(20)}
  assert len(draws) > 3  # redrawn with the key, not a fixed pair
  assert perceptual.pick_frames(recon, video, 0, jax.random.key(0))[1].shape[1] == 5  # 0 = every frame
  assert perceptual.pick_frames(recon, video, 9, jax.random.key(0))[1].shape[1] == 5


def test_missing_or_foreign_weights_give_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    perceptual.load_resnet_weights(str(tmp_path / "absent.safetensors"))
  save_file({"foo": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
  with pytest.raises(ValueError, match="not a Hugging Face ResNet"):
    perceptual.load_resnet_weights(str(tmp_path / "foreign.safetensors"))
  (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="cannot read"):
    perceptual.load_resnet_weights(str(tmp_path / "corrupt.safetensors"))


def _demo_digits_config(**overrides):
  return ml_collections.ConfigDict({**dict(network="demo_digits", weights_path="", train_clips=6, train_steps=3),
                                   **overrides})


def test_demo_digit_network_is_trained_once_and_feeds_the_perceptual_loss(tmp_path):
  loss = perceptual.make_perceptual_loss(_demo_digits_config(), str(tmp_path))
  cache = tmp_path / demo_perceptual.DEFAULT_FILE
  network = demo_perceptual.DigitPerceptualNetwork.load(str(cache))
  assert network.info["settings"]["num_clips"] == 6 and network.info["settings"]["steps"] == 3
  assert 0.0 <= network.info["validation_accuracy"] <= 1.0
  video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 3, 32, 32, 3)), jnp.float32)
  noise = jnp.asarray(np.random.default_rng(2).normal(size=video.shape), jnp.float32)
  key = jax.random.key(0)
  assert float(loss(video, video, key)) == pytest.approx(0.0, abs=1e-6)
  assert 0 < float(loss(video + 0.1 * noise, video, key)) < float(loss(video + 0.5 * noise, video, key))
  grad = jax.grad(lambda r: loss(r, video, key))(video + 0.1 * noise)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0

  stamp = cache.stat().st_mtime_ns  # same settings: loaded, not retrained
  perceptual.make_perceptual_loss(_demo_digits_config(), str(tmp_path))
  assert cache.stat().st_mtime_ns == stamp
  perceptual.make_perceptual_loss(_demo_digits_config(train_steps=4), str(tmp_path))  # stale: retrained
  assert demo_perceptual.DigitPerceptualNetwork.load(str(cache)).info["settings"]["steps"] == 4
  cache.write_bytes(b"\x93garbage")  # corrupt: retrained
  perceptual.make_perceptual_loss(_demo_digits_config(), str(tmp_path))
  assert demo_perceptual.DigitPerceptualNetwork.load(str(cache)).info["settings"]["steps"] == 3


def test_demo_digit_network_learns_digits_from_real_frames():
  settings = demo_perceptual.DigitNetSettings(num_clips=200, steps=150, batch_size=64, num_validation_clips=64)
  network = demo_perceptual.DigitPerceptualNetwork.train(settings)
  assert network.info["validation_accuracy"] > 0.5  # unseen handwriting; chance is 0.1


def test_bad_perceptual_settings_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="loss.perceptual.train_clips"):
    perceptual.make_perceptual_loss(_demo_digits_config(train_clips=0), str(tmp_path))
  with pytest.raises(ValueError, match="loss.perceptual.frames_per_clip=-1"):
    perceptual.make_perceptual_loss(_demo_digits_config(frames_per_clip=-1), str(tmp_path))
  with pytest.raises(ValueError, match="loss.perceptual.network='vgg'"):
    perceptual.make_perceptual_loss(_demo_digits_config(network="vgg"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="loss.perceptual.weights_path"):
    perceptual.make_perceptual_loss(ml_collections.ConfigDict(dict(network="resnet", weights_path="")), "")


def test_trainer_scores_the_frames_its_step_draws(tmp_path):
  """The tokenizer's step adds perceptual_weight x the loss on frames drawn from (seed, step)."""
  config = load_config_file(_DEMO_CONFIG, "quick")
  config.model.update(base_channels=4, num_groups=2, num_bits=6)
  config.data.update(source="demo", num_frames=5, height=16, width=16)
  config.train.update(batch_size=2, image_steps=0, num_steps=2, video_num_frames=0)
  config.loss.update(perceptual_weight=0.25)
  config.loss.perceptual.update(train_clips=6, train_steps=3, frames_per_clip=2)
  loss = perceptual.make_perceptual_loss(config.loss.perceptual, str(tmp_path))
  phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), loss)
  batch = data_lib.batch_of_clips(data_lib.make_source(config.data, "train"), 0, 2)
  video = jnp.asarray(batch, jnp.float32) / 127.5 - 1.0
  state = jax.jit(phase.init_state)(jax.random.key(0, impl="rbg"))
  for step in range(2):
    recon = Magvit2(phase.model_config).apply(state["params"], video)[0]
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    expected = float(loss(recon, video, key))
    state, metrics = jax.jit(phase.train_step)(state, batch)
    assert float(metrics["perceptual"]) == pytest.approx(expected, rel=1e-4)
    every_frame = float(perceptual.make_perceptual_loss(
        ml_collections.ConfigDict({**config.loss.perceptual.to_dict(), "frames_per_clip": 0}),
        str(tmp_path))(recon, video, key))
    assert float(metrics["perceptual"]) != pytest.approx(every_frame, rel=1e-4)
