"""A small video feature network trained here on real demo clips: the demo's stand-in for I3D.

FVD needs features that know what videos look like. No I3D weights ship with vp-jax, and
Kinetics features say little about 32x32 digit clips anyway, so the demo trains its own:
a small video CNN that reads real demo clips (train split, never generated ones) and predicts
what the ground truth says about them (digit, initial direction, speed class). The
64-d layer before those heads is the feature vector, so the Frechet distance on it
measures whether generated clips look like real ones in exactly the ways that matter here.

Training (3000 clips, 800 steps) takes about 2 CPU-minutes (6 min wall on a 2-core
machine shared with other jobs) and reaches, on validation clips, 69% digit, 94%
direction and 98% speed accuracy; weights and the settings that made them are
cached (flax msgpack) and retrained when missing, stale or corrupt.

Shapes: videos uint8 [batch, time, height, width, 3] (any time >= 4; frames are resized
to `size` x `size`) -> features float32 [batch, 64].
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines.demo import DIRECTIONS, generate_clips
from vp_jax.evaluation import cached_model
from vp_jax.evaluation.sprite import BACKGROUND_MAX, SPRITE_MIN

FORMAT_VERSION = 2  # bumped whenever the architecture or recipe changes (2: ink channel)
FEATURE_DIM = 64
DIRECTION_NAMES = tuple(sorted(DIRECTIONS))


@dataclasses.dataclass(frozen=True)
class FeatureTrainingSettings:
    num_clips: int = 3000
    steps: int = 800
    batch_size: int = 32
    num_validation_clips: int = 128
    learning_rate: float = 2e-3
    size: int = 32
    seed: int = 0


class DemoVideoEncoder(nn.Module):
    """[B, T, H, W, 4] (`_prepare`: RGB + ink in [-1, 1]) -> (features [B, 64], head logits).

    A per-frame 2D CNN (its flattened 4x4 map keeps where the sprite is), then a temporal
    convolution over the frame embeddings (how it moves), pooled over time. 2D rather than
    3D convolutions: XLA's CPU 3D-convolution gradients are about 20x slower.
    """

    @nn.compact
    def __call__(self, x):
        b, t = x.shape[:2]
        x = x.reshape(b * t, *x.shape[2:])
        x = nn.relu(nn.Conv(16, (3, 3), (2, 2), name="conv1")(x))
        x = nn.relu(nn.Conv(32, (3, 3), (2, 2), name="conv2")(x))
        x = nn.relu(nn.Conv(32, (3, 3), (2, 2), name="conv3")(x))
        x = nn.relu(nn.Dense(FEATURE_DIM, name="frame")(x.reshape(b, t, -1)))
        x = nn.relu(nn.Conv(FEATURE_DIM, (3,), name="temporal")(x))
        x = jnp.concatenate([x.mean(axis=1), x.max(axis=1)], axis=-1)
        features = nn.relu(nn.Dense(FEATURE_DIM, name="features")(x))
        heads = {"digit": nn.Dense(10, name="digit")(features),
                 "direction": nn.Dense(len(DIRECTION_NAMES), name="direction")(features),
                 "speed": nn.Dense(2, name="speed")(features)}
        return features, heads


def _prepare(videos, size: int):
    """uint8 [B, T, H, W, 3] -> float [B, T, size, size, 4]: RGB in [-1, 1] plus the sprite ink map."""
    x = videos.astype(jnp.float32)
    if x.shape[2:4] != (size, size):
        x = jax.image.resize(x, (*x.shape[:2], size, size, 3), "bilinear")
    ink = jnp.clip((x.min(axis=-1, keepdims=True) - BACKGROUND_MAX) / (SPRITE_MIN - BACKGROUND_MAX), 0, 1)
    return jnp.concatenate([x / 127.5 - 1.0, 2 * ink - 1], axis=-1)


def _labels(clips) -> dict[str, np.ndarray]:
    return {"digit": np.array([c.truth["digit"] for c in clips]),
            "direction": np.array([DIRECTION_NAMES.index(c.truth["direction"]) for c in clips]),
            "speed": np.array([int(c.truth["speed_px_per_frame"] > 1.5 * c.video.shape[2] / 32) for c in clips])}


def _accuracies(model, params, videos, labels, size) -> dict[str, float]:
    _, heads = jax.jit(lambda p, v: model.apply({"params": p}, _prepare(v, size)))(params, videos)
    return {k: float((np.asarray(heads[k]).argmax(-1) == labels[k]).mean()) for k in labels}


class DemoFeatureNetwork(cached_model.CachedFlaxModel):
    """`frechet.FeatureNetwork` for the demo: uint8 [N, T, H, W, 3] -> float32 [N, 64]."""

    name = "demo_features"
    log_name, what, format_version = "demo_features", "demo feature network", FORMAT_VERSION
    default_settings = FeatureTrainingSettings()

    def __init__(self, params, info: dict):
        self.params, self.info = params, info
        self.size = int(info["settings"]["size"])
        self.model = DemoVideoEncoder()
        self._features = jax.jit(lambda p, v: self.model.apply({"params": p}, _prepare(v, self.size))[0])

    def features(self, videos: np.ndarray) -> np.ndarray:
        videos = np.asarray(videos)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[1] < 4:
            raise ValueError(f"videos must be uint8 [N, T >= 4, H, W, 3]; got {videos.dtype} {videos.shape}")
        return np.asarray(self._features(self.params, jnp.asarray(videos)))

    @classmethod
    def train(cls, settings: FeatureTrainingSettings = FeatureTrainingSettings()) -> "DemoFeatureNetwork":
        clips = list(generate_clips("train", settings.num_clips, settings.seed, size=settings.size,
                                    handwritings_per_digit=0))
        videos = np.stack([c.video for c in clips])
        labels = _labels(clips)
        model = DemoVideoEncoder()
        params = model.init(jax.random.key(settings.seed), _prepare(jnp.asarray(videos[:1]), settings.size))["params"]

        def loss_fn(p, batch):
            batch_videos, batch_labels = batch
            _, heads = model.apply({"params": p}, _prepare(batch_videos, settings.size))
            return sum(optax.softmax_cross_entropy_with_integer_labels(heads[k], batch_labels[k]).mean()
                       for k in heads)

        def sample_batch(rng):
            idx = rng.choice(len(videos), settings.batch_size, replace=False)
            return jnp.asarray(videos[idx]), {k: jnp.asarray(v[idx]) for k, v in labels.items()}

        params = cached_model.fit(params, loss_fn, sample_batch, settings.steps, settings.learning_rate,
                                  settings.seed, "demo_features", log_every=50)
        val = list(generate_clips("validation", settings.num_validation_clips, settings.seed, size=settings.size,
                                  handwritings_per_digit=0))
        info = {"format_version": FORMAT_VERSION, "settings": dataclasses.asdict(settings),
                "validation_accuracy": _accuracies(model, params, np.stack([c.video for c in val]),
                                                   _labels(val), settings.size)}
        return cls(params, info)

    def describe(self) -> str:
        return f"validation accuracy {self.info['validation_accuracy']}"
