"""The demo's perceptual network: a small image CNN trained here to tell real demo digits apart.

MAGVIT-v2 compares reconstructions with their originals through an ImageNet-trained ResNet-50
(`perceptual.py`). No published network knows 32x32 handwritten digits over a colour wash, so
the demo trains its own the way ImageNet networks are made, as a classifier: of the digit in
frames of real clips of the demo's *train* split, in every training handwriting (the
validation and test splits' handwritings are never seen). Its three conv stages are the
features the loss compares, so a reconstruction is pulled towards what tells one digit from
another, not only towards its pixels.

What it does on the demo: the LM reads the digit from the video tokens (video-to-audio's
pitch names it), and with L2 alone the demo tokenizer, trained on 4 handwritings per digit,
redraws some unseen handwritings as other digits. With this loss at weight 1.0 a linear probe
on the sprite's tokens (vp_jax/evaluation/token_probe.py) read the digit of 0.875 / 0.875 of
the test / validation clips against 0.80 / 0.72, but the main job's CPU-budget LM learned the
more detailed ids worse, so the demo config leaves the loss off (experiments/magvit2_demo.py
has the figures).

It is not a scorer: generated clips are scored by an SVM on sprite crops
(vp_jax/evaluation/digit_classifier.py), Frechet distances by a video network
(vp_jax/evaluation/demo_features.py), each trained on its own.

Cached as flax msgpack with the settings that made it (`vp_jax.evaluation.cached_model`),
retrained when missing, stale or corrupt. Input: frames normalised as `perceptual.py` feeds
its networks (`perceptual.imagenet_normalise`), [N, H, W, 3], any H and W.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np
import optax

from data_pipelines.demo import generate_clips
from vp_jax.evaluation import cached_model
from vp_tokenizers.magvit2.perceptual import imagenet_normalise

NAME = "demo_digits"
DEFAULT_FILE = "demo_digits.msgpack"  # in the tokenizer's workdir when loss.perceptual.weights_path is ''
FORMAT_VERSION = 1
NUM_DIGITS = 10


@dataclasses.dataclass(frozen=True)
class DigitNetSettings:
  """How the network is trained; the cache is reused only while these match."""
  num_clips: int = 1500  # real train-split clips, every training handwriting
  frame_stride: int = 4  # frames 0, 4, 8, ... of each clip
  steps: int = 600  # with batch 64: 0.930 on validation frames in ~95 s of a 2-core CPU (800 x 128: 0.936, ~410 s)
  batch_size: int = 64
  learning_rate: float = 1e-3
  num_validation_clips: int = 128  # at most num_clips
  size: int = 32
  seed: int = 0

  def __post_init__(self):
    for field, value in (("train_clips", self.num_clips), ("train_steps", self.steps),
                         ("frame_stride", self.frame_stride), ("batch_size", self.batch_size)):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"config.loss.perceptual.{field}={value!r}: expected an int >= 1")


class DigitFrameNet(nn.Module):
  """[N, H, W, 3] normalised frames -> (stage features [N, h, w, C] x 3, digit logits [N, 10])."""

  @nn.compact
  def __call__(self, x):
    features = []
    for i, width in enumerate((32, 64, 128)):
      x = nn.relu(nn.Conv(width, (3, 3), strides=1 if i == 0 else 2, name=f"conv{i}")(x))
      features.append(x)
    return features, nn.Dense(NUM_DIGITS, name="digit")(x.mean(axis=(1, 2)))


def _frames(split: str, num_clips: int, settings: DigitNetSettings) -> tuple[np.ndarray, np.ndarray]:
  """Normalised frames [N, size, size, 3] of real demo clips and their digits [N]."""
  frames, digits = [], []
  for clip in generate_clips(split, num_clips, settings.seed, size=settings.size, handwritings_per_digit=0):
    picked = clip.video[::settings.frame_stride]
    frames.append(picked)
    digits += [clip.truth["digit"]] * len(picked)
  return np.asarray(imagenet_normalise(np.concatenate(frames).astype(np.float32) / 255.0)), np.array(digits)


class DigitPerceptualNetwork(cached_model.CachedFlaxModel):
  """`perceptual.NETWORKS` entry: features(images) -> the three conv stages' outputs."""

  log_name, what, format_version = NAME, "demo perceptual network", FORMAT_VERSION
  default_settings = DigitNetSettings()

  def __init__(self, params, info: dict):
    self.params, self.info = params, info
    self.model = DigitFrameNet()

  def features(self, images: jax.Array) -> list[jax.Array]:
    """Traceable (runs inside the tokenizer's jitted step); the parameters stay frozen."""
    return self.model.apply({"params": jax.lax.stop_gradient(self.params)}, images)[0]

  def accuracy(self, frames: np.ndarray, digits: np.ndarray) -> float:
    logits = jax.jit(lambda p, x: self.model.apply({"params": p}, x)[1])(self.params, frames)
    return float((np.asarray(logits).argmax(-1) == digits).mean())

  @classmethod
  def train(cls, settings: DigitNetSettings = DigitNetSettings()) -> "DigitPerceptualNetwork":
    frames, digits = _frames("train", settings.num_clips, settings)
    model = DigitFrameNet()
    params = model.init(jax.random.key(settings.seed), frames[:1])["params"]

    def loss_fn(p, batch):
      x, y = batch
      return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x)[1], y).mean()

    def sample_batch(rng):
      idx = rng.integers(0, len(frames), settings.batch_size)
      return frames[idx], digits[idx]

    params = cached_model.fit(params, loss_fn, sample_batch, settings.steps, settings.learning_rate,
                              settings.seed, NAME, log_every=100)
    network = cls(params, {"format_version": FORMAT_VERSION, "settings": dataclasses.asdict(settings)})
    network.info["validation_accuracy"] = network.accuracy(
        *_frames("validation", min(settings.num_validation_clips, settings.num_clips), settings))
    return network

  def describe(self) -> str:
    return f"digit accuracy on validation-split frames (unseen handwriting) {self.info['validation_accuracy']:.3f}"
