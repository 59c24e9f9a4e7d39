"""Reconstruction quality metrics on uint8 videos [batch, time, height, width, 3].

PSNR is computed per clip over all its pixels (peak 255); SSIM per frame with Wang et al.'s
11-tap Gaussian window (sigma 1.5, K1 0.01, K2 0.03), averaged over channels, then frames.
Both match `skimage.metrics` (tested).
"""
import cv2
import numpy as np


def _check_pair(videos: np.ndarray, reconstructions: np.ndarray) -> None:
  if videos.shape != reconstructions.shape or videos.ndim != 5:
    raise ValueError(f"metrics need two [B, T, H, W, C] arrays of one shape, got {videos.shape} "
                     f"and {reconstructions.shape}")


def psnr(videos: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
  """Per-clip PSNR in dB, float64 [B] (inf for a perfect clip)."""
  _check_pair(videos, reconstructions)
  err = videos.astype(np.float64) - reconstructions.astype(np.float64)
  mse = np.mean(np.square(err), axis=(1, 2, 3, 4))
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(255.0**2 / mse)


def _ssim_frame(a: np.ndarray, b: np.ndarray) -> float:
  """SSIM of two float64 [H, W, C] frames in [0, 255]: mean over the valid interior and channels."""
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)
  values = []
  for ch in range(a.shape[-1]):
    x, y = a[..., ch], b[..., ch]
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    values.append(s[5:-5, 5:-5].mean() if min(s.shape) > 10 else s.mean())
  return float(np.mean(values))


def ssim(videos: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
  """Per-clip SSIM, float64 [B]: the mean over frames of per-frame SSIM."""
  _check_pair(videos, reconstructions)
  a, b = videos.astype(np.float64), reconstructions.astype(np.float64)
  return np.array([np.mean([_ssim_frame(a[i, t], b[i, t]) for t in range(a.shape[1])])
                   for i in range(a.shape[0])])


class CodebookCounter:
  """Accumulates token-id counts over many batches: usage fraction and perplexity of 2^K codes."""

  def __init__(self, num_bits: int):
    self.num_bits = num_bits
    self.counts = np.zeros(2**num_bits, np.int64)

  def add(self, ids: np.ndarray) -> None:
    self.counts += np.bincount(np.asarray(ids).reshape(-1), minlength=2**self.num_bits)

  @property
  def usage(self) -> float:
    return float(np.mean(self.counts > 0))

  @property
  def perplexity(self) -> float:
    p = self.counts[self.counts > 0] / max(self.counts.sum(), 1)
    return float(np.exp(-np.sum(p * np.log(p))))
