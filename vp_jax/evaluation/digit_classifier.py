"""Which digit does a clip show? A small classifier of sprite crops, trained on real digits.

The scorer must never learn from generated clips (it would learn the generator's habits),
so it is trained only on scikit-learn's real handwritten digits of the demo's *train*
split, drawn into clips by the demo's own renderer (`data_pipelines.demo.generate_clips`)
and degraded like a tokenizer would (`degrade`: blur, resolution round trip, noise).
Training crops go through exactly the path scoring uses (`sprite.locate_sprite`, then
`sprite.sprite_crops` -> 8x8), so train and test see the same kind of input; validation
and test splits hold other digit images (other writers as far as the data tells).

The model is an RBF support vector machine (scikit-learn's SVC; a few seconds to fit,
about 15 s of CPU to render its crops). It is cached as a plain .npz (no pickle) with a
format version and the settings that made it; `load_or_train` retrains when the file is
missing, stale or corrupt. On the original 8x8 images the same SVC reads 95.6% of the
test split, the ceiling any reader of these digits faces for unseen writers.

A clip's digit: the digit most of its frames (those where the sprite was found) read as.
Shapes: crops float32 [N, 8, 8]; video uint8 [T, H, W, 3].
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from data_pipelines.demo import generate_clips
from vp_jax.evaluation import cached_model
from vp_jax.evaluation import degrade, sprite
from vp_jax.files import atomic_open

FORMAT_VERSION = 2  # bumped whenever the training recipe changes (2: heavier blur)
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    num_clips: int = 1600
    frames_per_clip: int = 9  # evenly spaced frames used from each clip
    size: int = 32
    svm_c: float = 10.0
    seed: int = 0


def _degraded(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random tokenizer-like degradation: clean, blur, 2x resolution round trip, noise, mixes.

    Blur reaches sigma 1.8 (about 21 dB PSNR on demo clips, where a young tokenizer sits):
    against training on sigma <= 1.3 this costs ~3 points on clean clips and gains ~10 at
    sigma 1.5 (bench/eval_scorer_robustness.py).
    """
    kind = rng.integers(6)
    if kind == 1:
        video = degrade.gaussian_blur(video, rng.uniform(0.4, 1.8))
    elif kind == 2:
        video = degrade.resize_round_trip(video, 2)
    elif kind == 3:
        video = degrade.add_noise(video, rng.uniform(2, 12), rng)
    elif kind == 4:
        video = degrade.add_noise(degrade.gaussian_blur(video, rng.uniform(0.4, 1.8)), rng.uniform(2, 8), rng)
    elif kind == 5:
        video = degrade.gaussian_blur(degrade.resize_round_trip(video, 2), rng.uniform(0.3, 1.0))
    return video


def clip_crops(video: np.ndarray, sprite_size: int | None = None) -> np.ndarray:
    """float32 [F, 8, 8]: sprite crops of the frames of `video` where the sprite was found."""
    video = sprite.check_video(video)
    sprite_size = sprite.sprite_size_for(video.shape[2]) if sprite_size is None else sprite_size
    centroids, found = sprite.locate_sprite(video, sprite_size)
    return sprite.sprite_crops(video, centroids, sprite_size)[found]


def training_crops(split: str, settings: TrainingSettings) -> tuple[np.ndarray, np.ndarray]:
    """(crops float32 [N, 8, 8], labels int64 [N]) from real digits of `split`, degraded."""
    rng = np.random.default_rng(settings.seed)
    crops, labels = [], []
    for clip in generate_clips(split, settings.num_clips, settings.seed, size=settings.size,
                               handwritings_per_digit=0):
        video = clip.video[np.linspace(0, len(clip.video) - 1, settings.frames_per_clip).round().astype(int)]
        found = clip_crops(_degraded(video, rng), clip.truth["sprite_size"])
        crops.append(found)
        labels.append(np.full([len(found)], clip.truth["digit"], np.int64))
    return np.concatenate(crops), np.concatenate(labels)


class DigitClassifier:
    """RBF support vector machine (one-vs-one, libsvm's convention) over flattened 8x8 crops.

    Fitted with scikit-learn's SVC; stored and evaluated here from its plain arrays, so the
    cache is an .npz and not a pickle tied to one scikit-learn version.
    """

    def __init__(self, arrays: dict[str, np.ndarray], info: dict):
        missing = {"support_vectors", "dual_coef", "intercept", "n_support", "gamma"} - set(arrays)
        if missing:
            raise ValueError(f"digit classifier is missing arrays {sorted(missing)}")
        self.support_vectors = np.asarray(arrays["support_vectors"], np.float64)
        self.dual_coef = np.asarray(arrays["dual_coef"], np.float64)
        self.intercept = np.asarray(arrays["intercept"], np.float64)
        self.n_support = np.asarray(arrays["n_support"], np.int64)
        self.gamma = float(arrays["gamma"])
        if self.support_vectors.shape[1:] != (sprite.CROP_SIDE ** 2,) or len(self.n_support) != NUM_CLASSES:
            raise ValueError(f"digit classifier must map 64 features to {NUM_CLASSES} classes; got "
                             f"support vectors {self.support_vectors.shape}, {len(self.n_support)} classes")
        self.info = info

    @classmethod
    def train(cls, settings: TrainingSettings = TrainingSettings()) -> "DigitClassifier":
        from sklearn.svm import SVC

        crops, labels = training_crops("train", settings)
        svc = SVC(C=settings.svm_c, gamma="scale").fit(crops.reshape(len(crops), -1), labels)
        if list(svc.classes_) != list(range(NUM_CLASSES)):
            raise ValueError(f"training crops cover digits {list(svc.classes_)}; need all 10 "
                             f"(raise num_clips={settings.num_clips})")
        arrays = {"support_vectors": svc.support_vectors_, "dual_coef": svc.dual_coef_,
                  "intercept": svc.intercept_, "n_support": svc.n_support_,
                  "gamma": np.array(svc._gamma)}
        info = {"format_version": FORMAT_VERSION, "settings": dataclasses.asdict(settings),
                "num_training_crops": int(len(crops))}
        model = cls(arrays, info)
        val_crops, val_labels = training_crops("validation", dataclasses.replace(
            settings, num_clips=max(50, settings.num_clips // 4), seed=settings.seed + 1))
        model.info["validation_crop_accuracy"] = float((model.predict(val_crops) == val_labels).mean())
        return model

    def votes(self, crops: np.ndarray) -> np.ndarray:
        """int64 [N, 10] one-vs-one votes per class for crops float [N, 8, 8]."""
        crops = np.asarray(crops, np.float64)
        if crops.ndim != 3 or crops.shape[1:] != (sprite.CROP_SIDE, sprite.CROP_SIDE):
            raise ValueError(f"crops must be [N, 8, 8]; got {crops.shape}")
        x = crops.reshape(len(crops), -1)
        sq = (x ** 2).sum(1)[:, None] + (self.support_vectors ** 2).sum(1)[None] \
            - 2 * x @ self.support_vectors.T
        kernel = np.exp(-self.gamma * np.maximum(sq, 0))  # [N, num_support_vectors]
        bounds = np.concatenate([[0], np.cumsum(self.n_support)])
        votes = np.zeros([len(x), NUM_CLASSES], np.int64)
        pair = 0
        for i in range(NUM_CLASSES):
            for j in range(i + 1, NUM_CLASSES):
                si, sj = slice(bounds[i], bounds[i + 1]), slice(bounds[j], bounds[j + 1])
                decision = (kernel[:, si] @ self.dual_coef[j - 1, si] + kernel[:, sj] @ self.dual_coef[i, sj]
                            + self.intercept[pair])
                votes[:, i] += decision > 0
                votes[:, j] += decision <= 0
                pair += 1
        return votes

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """int64 [N] digit of each crop (ties go to the lower digit, as in libsvm)."""
        return np.argmax(self.votes(crops), axis=-1)

    def classify_clip(self, video: np.ndarray, sprite_size: int | None = None) -> np.ndarray | None:
        """float [10]: the share of the clip's sprite frames read as each digit (None if none)."""
        crops = clip_crops(video, sprite_size)
        if not len(crops):
            return None
        return np.bincount(self.predict(crops), minlength=NUM_CLASSES) / len(crops)

    def save(self, path: str) -> None:
        arrays = {"support_vectors": self.support_vectors, "dual_coef": self.dual_coef,
                  "intercept": self.intercept, "n_support": self.n_support,
                  "gamma": np.array(self.gamma), "info_json": np.array(json.dumps(self.info))}
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str) -> "DigitClassifier":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"digit classifier file not found: {path}")
        try:
            with np.load(path) as data:
                info = json.loads(str(data["info_json"]))
                arrays = {k: data[k] for k in data.files if k != "info_json"}
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise ValueError(f"digit classifier file {path} is corrupt: {e}") from e
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"digit classifier file {path} has format_version "
                             f"{info.get('format_version')}; expected {FORMAT_VERSION}")
        return cls(arrays, info)

    @staticmethod
    def cache_file(cache_dir: str, settings: TrainingSettings = TrainingSettings()) -> str:
        """The classifier's file in a scorer cache directory: one file per training-clip count,
        so runs with different `--classifier_clips` (the main job's harness trains on 800 clips,
        the standalone commands default to 1600) keep their own instead of retraining and
        overwriting each other's."""
        return os.path.join(cache_dir, f"digit_classifier_{settings.num_clips}clips.npz")

    @classmethod
    def load_or_train(cls, path: str, settings: TrainingSettings = TrainingSettings()) -> "DigitClassifier":
        """Loads `path` if it holds a classifier trained with `settings`; else trains and saves."""
        return cached_model.load_or_train(cls, path, settings, "digit_classifier",
                                          lambda m: f"validation crop accuracy {m.info['validation_crop_accuracy']:.3f}")


def score_digit(video: np.ndarray, truth: dict, classifier: DigitClassifier) -> dict[str, float]:
    """{'digit_correct': 0/1 (majority of frames), 'digit_frame_share': frames read as the digit}.

    A clip where no frame shows a sprite scores 0 on both.
    """
    if "digit" not in truth:
        raise ValueError(f"truth is missing 'digit'; got keys {sorted(truth)}")
    shares = classifier.classify_clip(video, truth.get("sprite_size"))
    if shares is None:
        return {"digit_correct": 0.0, "digit_frame_share": 0.0}
    digit = int(truth["digit"])
    return {"digit_correct": float(int(np.argmax(shares)) == digit),
            "digit_frame_share": float(shares[digit])}
