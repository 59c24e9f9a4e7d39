"""Frechet distance maths against a direct computation, and the I3D weight loader."""
import numpy as np
import pytest
import scipy.linalg

from vp_jax.evaluation import frechet


def _direct_frechet(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_sets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    y = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 0.7
    assert frechet.frechet_distance_of_features(x, y) == pytest.approx(_direct_frechet(x, y), rel=1e-6)


def test_identical_sets_have_zero_distance_and_shift_adds_squared_norm():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    assert frechet.frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet.frechet_distance_of_features(x, x + shift) == pytest.approx(5.25, rel=1e-9)


def test_one_dimensional_gaussians_follow_the_closed_form():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 for 1-D Gaussians.
    d = frechet.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert d == pytest.approx(4.0 + 1.0)


def test_singular_covariances_with_fewer_samples_than_dimensions_stay_finite():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(4, 16)), rng.normal(size=(5, 16)) + 3.0
    d = frechet.frechet_distance_of_features(x, y)
    assert np.isfinite(d) and d > 16 * 9 * 0.5


def test_bad_feature_shapes_are_rejected_with_the_shapes_named():
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        frechet.feature_statistics(np.zeros([1, 3]))
    with pytest.raises(ValueError, match="same D"):
        frechet.frechet_distance_of_features(np.zeros([3, 2]), np.zeros([3, 4]))


class _MeanColour:
    name = "mean_colour"

    def features(self, videos):
        return videos.reshape(len(videos), -1, 3).mean(1)


def test_frechet_video_distance_batches_a_pluggable_network():
    rng = np.random.default_rng(3)
    real = rng.integers(0, 100, size=(6, 2, 4, 4, 3), dtype=np.uint8)
    fake = rng.integers(100, 255, size=(5, 2, 4, 4, 3), dtype=np.uint8)
    direct = frechet.frechet_distance_of_features(_MeanColour().features(real), _MeanColour().features(fake))
    assert frechet.frechet_video_distance(_MeanColour(), real, fake, batch_size=2) == pytest.approx(direct)
    assert frechet.frechet_video_distance(_MeanColour(), real, real, batch_size=4) == pytest.approx(0, abs=1e-9)
