"""Frechet distance between two sets of clip features, with a pluggable feature network.

The Frechet (2-Wasserstein) distance between Gaussians fitted to two feature sets:

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

With I3D features of Kinetics-400 logits it is FVD (`vp_jax.evaluation.i3d`, weights the
user supplies); on the embedded demo the features come from a small network trained here
on real demo clips (`vp_jax.evaluation.demo_features`). Any object with a `name` and a
`features(videos) -> [N, D]` method plugs in (`FeatureNetwork`).

tr((S_1 S_2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
symmetric PSD matrix S_1^(1/2) S_2 S_1^(1/2) (same eigenvalues as S_1 S_2). Unlike a
general `sqrtm(S_1 @ S_2)` this stays real and finite when the covariances are singular,
which they are whenever there are fewer clips than feature dimensions.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class FeatureNetwork(Protocol):
    """Maps clips to feature vectors: uint8 [N, T, H, W, 3] -> float [N, D]."""

    name: str

    def features(self, videos: np.ndarray) -> np.ndarray:
        ...


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean float64 [D], covariance float64 [D, D], unbiased) of features [N, D], N >= 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D]; got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or Inf")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); >= 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    for name, value, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)),
                               ("sigma1", sigma1, (d, d)), ("sigma2", sigma2, (d, d))):
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {value.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance between two feature sets [N1, D] and [N2, D]."""
    features1, features2 = np.asarray(features1), np.asarray(features2)
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D; got {features1.shape} "
                         f"and {features2.shape}")
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def batched_features(network: FeatureNetwork, videos: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Runs `network.features` over uint8 [N, T, H, W, 3] clips in batches -> float [N, D]."""
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be uint8 [N, T, H, W, 3]; got {videos.dtype} {videos.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return np.concatenate([np.asarray(network.features(videos[i:i + batch_size]), np.float64)
                           for i in range(0, len(videos), batch_size)])


def frechet_video_distance(network: FeatureNetwork, real_videos: np.ndarray,
                           generated_videos: np.ndarray, batch_size: int = 16) -> float:
    """Frechet distance of `network` features: real vs generated clips, each uint8 [N, T, H, W, 3]."""
    return frechet_distance_of_features(batched_features(network, real_videos, batch_size),
                                        batched_features(network, generated_videos, batch_size))
