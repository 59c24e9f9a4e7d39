"""PSNR/SSIM agree with scikit-image; codebook counting accumulates over batches."""
import numpy as np
import pytest
from skimage import metrics as skmetrics

from vp_tokenizers.magvit2 import metrics


def _pair(seed=0):
  rng = np.random.default_rng(seed)
  videos = rng.integers(0, 256, (2, 3, 24, 20, 3), dtype=np.uint8)
  noise = rng.normal(0, 12, videos.shape)
  return videos, np.clip(videos + noise, 0, 255).astype(np.uint8)


def test_psnr_matches_scikit_image_per_clip():
  videos, recon = _pair()
  expected = [skmetrics.peak_signal_noise_ratio(v, r, data_range=255) for v, r in zip(videos, recon)]
  np.testing.assert_allclose(metrics.psnr(videos, recon), expected, rtol=1e-10)


def test_ssim_matches_scikit_image_gaussian_ssim():
  videos, recon = _pair(1)
  expected = [np.mean([skmetrics.structural_similarity(
      v[t], r[t], data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False) for t in range(v.shape[0])]) for v, r in zip(videos, recon)]
  np.testing.assert_allclose(metrics.ssim(videos, recon), expected, rtol=1e-4)


def test_identical_videos_have_infinite_psnr_and_unit_ssim():
  videos, _ = _pair(2)
  assert np.all(np.isinf(metrics.psnr(videos, videos)))
  np.testing.assert_allclose(metrics.ssim(videos, videos), 1.0)


def test_mismatched_shapes_are_rejected():
  with pytest.raises(ValueError, match="one shape"):
    metrics.psnr(np.zeros((1, 1, 8, 8, 3)), np.zeros((1, 1, 8, 4, 3)))


def test_codebook_counter_accumulates_usage_over_batches():
  counter = metrics.CodebookCounter(3)
  counter.add(np.array([[0, 1], [1, 2]]))
  counter.add(np.array([3]))
  assert counter.usage == 0.5
  np.testing.assert_allclose(counter.perplexity, np.exp(-(3 * 0.2 * np.log(0.2) + 0.4 * np.log(0.4))))
