"""Training step, Orbax checkpoint round trip and the VideoTokenizer inference API."""
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from vp_jax import checkpointing
from vp_tokenizers.magvit2 import data as data_lib
from vp_tokenizers.magvit2 import train
from vp_tokenizers.magvit2.api import VideoTokenizer
from vp_tokenizers.magvit2.model import Magvit2Config


_DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "magvit2_demo.py")


def _tiny_config():
  spec = importlib.util.spec_from_file_location("magvit2_demo_config", _DEMO_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("quick")
  config.model.update(base_channels=4, num_groups=2)
  config.data.update(num_frames=5, height=16, width=16)
  return config


@pytest.fixture(scope="module")
def video_phase_state():
  config = _tiny_config()
  phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), None)
  return config, phase, jax.jit(phase.init_state)(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def saved_checkpoint(video_phase_state, tmp_path_factory):
  config, phase, state = video_phase_state
  directory = str(tmp_path_factory.mktemp("magvit2") / "checkpoints")
  with checkpointing.Checkpointer(directory, async_save=False) as ckpt:
    ckpt.save(3, state, metadata=train.checkpoint_metadata(phase, 12, config), force=True)
  return directory


def _clips(n=3, frames=5, size=16):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)


def test_training_steps_reduce_reconstruction_error():
  config = _tiny_config()
  config.train.update(learning_rate=3e-3, warmup_steps=1)
  phase = train.make_phase("image", config, Magvit2Config.from_dict(
      dict(config.model, temporal_kernel_size=1, temporal_downsample=(False, False))), None)
  state = jax.jit(phase.init_state)(jax.random.PRNGKey(0))
  source = data_lib.make_source(config.data, "train", 1)
  batch = data_lib.batch_of_clips(source, 0, 8)
  step = jax.jit(phase.train_step)
  l2 = []
  for _ in range(20):
    state, metrics = step(state, batch)
    l2.append(float(metrics["l2"]))
  assert int(state["step"]) == 20
  assert np.mean(l2[-3:]) < 0.5 * np.mean(l2[:3])


def test_checkpoint_round_trip_gives_identical_ids(video_phase_state, saved_checkpoint):
  config, phase, state = video_phase_state
  in_memory = VideoTokenizer(phase.model_config, state["ema_params"], batch_size=2)
  loaded = VideoTokenizer.load(saved_checkpoint, batch_size=2)
  clips = _clips()
  np.testing.assert_array_equal(loaded.encode(clips), in_memory.encode(clips))
  assert loaded.bits == config.model.num_bits
  assert loaded.checkpoint_id == VideoTokenizer.load(saved_checkpoint, step=3).checkpoint_id
  assert "step3" in loaded.checkpoint_id


def test_encode_is_deterministic_in_range_and_decodes_to_the_input_shape(video_phase_state):
  _, phase, state = video_phase_state
  tokenizer = VideoTokenizer(phase.model_config, state["ema_params"], batch_size=2)
  clips = _clips()
  ids = tokenizer.encode(clips)
  assert ids.dtype == np.int32 and ids.shape == (3,) + tokenizer.latent_shape(5, 16, 16) == (3, 2, 4, 4)
  assert ids.min() >= 0 and ids.max() < 2**tokenizer.bits
  np.testing.assert_array_equal(tokenizer.encode(clips), ids)
  np.testing.assert_array_equal(tokenizer.encode(clips.astype(np.float32) / 255.0), ids)
  np.testing.assert_array_equal(tokenizer.encode(clips[1:2]), ids[1:2])  # batch-independent
  video = tokenizer.decode(ids)
  assert video.dtype == np.uint8 and video.shape == clips.shape


def test_images_and_portrait_clips_use_the_same_api(video_phase_state):
  _, phase, state = video_phase_state
  tokenizer = VideoTokenizer(phase.model_config, state["ema_params"], batch_size=2)
  clips = _clips()
  image_ids = tokenizer.encode(clips[:, :1])
  assert image_ids.shape == (3, 1, 4, 4)
  np.testing.assert_array_equal(image_ids[:, 0], tokenizer.encode(clips)[:, 0])
  portrait = np.zeros((1, 5, 24, 16, 3), np.uint8)
  assert tokenizer.decode(tokenizer.encode(portrait)).shape == portrait.shape


def test_bad_inputs_give_clear_errors(video_phase_state, tmp_path):
  _, phase, state = video_phase_state
  tokenizer = VideoTokenizer(phase.model_config, state["ema_params"], batch_size=2)
  with pytest.raises(ValueError, match="rank 5"):
    tokenizer.encode(np.zeros((5, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match=r"1 \+ 4\*n.*got 4"):
    tokenizer.encode(np.zeros((1, 4, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match=r"float video must lie in \[0, 1\]"):
    tokenizer.encode(np.full((1, 1, 16, 16, 3), 2.0, np.float32))
  with pytest.raises(TypeError, match="uint8 or float32"):
    tokenizer.encode(np.zeros((1, 1, 16, 16, 3), np.int64))
  with pytest.raises(ValueError, match=r"\[0, 64\), found 64"):
    tokenizer.decode(np.full((1, 1, 4, 4), 64, np.int32))
  with pytest.raises(ValueError, match="rank 4"):
    tokenizer.decode(np.zeros((4, 4), np.int32))
  with pytest.raises(FileNotFoundError, match="not found"):
    VideoTokenizer.load(str(tmp_path / "missing"))


def test_bad_training_config_names_the_field():
  config = _tiny_config()
  config.train.image_steps = config.train.num_steps
  with pytest.raises(ValueError, match="config.train.image_steps"):
    train.validate_config(config)
  config = _tiny_config()
  config.data.num_frames = 6
  with pytest.raises(ValueError, match="num_frames must be 1 \\+ 4\\*n"):
    train.validate_config(config)


@pytest.mark.slow
def test_train_resumes_and_writes_eval_results(tmp_path):
  config = _tiny_config()
  config.train.num_steps = 4
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  config.train.num_steps = 6
  figures = train.train(config, workdir)  # resumes at step 4 in the video phase
  assert figures["step"] == 6 and figures["phase"] == "video"
  lines = [json.loads(l) for l in open(os.path.join(workdir, "eval.jsonl"))]
  assert [l["step"] for l in lines] == [2, 3, 4, 6]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  tokenizer = VideoTokenizer.load(os.path.join(workdir, "checkpoints"))
  assert tokenizer.encode(_clips()).shape == (3, 2, 4, 4)
