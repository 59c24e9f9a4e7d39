"""Training and evaluation clips for the video tokenizer, from a registry of sources.

Every source is random access: `source.clip(index)` returns uint8 [T, H, W, 3] for any
index >= 0, deterministically from (seed, split, index). The trainer's data position is
therefore one integer, saved with each checkpoint, and resume is exact.

Sources (config `data.source`):
  'photo_pans'   scikit-image's bundled photos moved by known pans and zooms (the training
                 photos and the held-out photos are disjoint).
  'image_folder' the same pans and zooms over the images of a folder (stills when T = 1).
  'video_folder' 17-frame clips cut from the videos of a folder, resampled to `fps`, centre
                 cropped and resized.
  'demo'         the embedded demo clips of `data_pipelines.demo` (digits over photos);
                 `data.handwritings_per_digit` (default the demo's 4, 0 = every image of
                 the digit) picks how many handwritings each digit is drawn in per split.

`data.max_clips > 0` cycles over (and caches in memory) that many clips.
"""
import functools
import os
from typing import Callable

import cv2
import ml_collections
import numpy as np

TRAIN_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "colorwheel", "grass",
                "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
                "text", "stereo_motorcycle", "cell")
HELD_OUT_PHOTOS = ("coffee", "rocket", "coins")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")
SPLITS = ("train", "eval")


def _as_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


@functools.cache
def _skimage_photo(name: str) -> np.ndarray:
  import skimage.data  # pylint: disable=g-import-not-at-top
  image = getattr(skimage.data, name)()
  return _as_rgb(image[0] if isinstance(image, tuple) else image)


def pan_zoom_clip(photo: np.ndarray, rng: np.random.Generator, num_frames: int, height: int,
                  width: int, max_speed: float = 1.5, max_zoom: float = 0.15
                  ) -> tuple[np.ndarray, dict]:
  """Moves a window over `photo` with a constant pan (output pixels per frame) and zoom.

  Returns (uint8 [T, height, width, 3], motion {'pan': (dx, dy), 'zoom': total_scale_change}).
  The window first covers 25-70% of the photo's shorter side, downscaled with area
  averaging, so the frames look like real photos rather than aliased pixels.
  """
  ph, pw = photo.shape[:2]
  window = rng.uniform(0.25, 0.7) * min(ph, pw) / max(height, width)  # photo px per output px
  small = cv2.resize(photo, (max(width, round(pw / window)), max(height, round(ph / window))),
                     interpolation=cv2.INTER_AREA)
  sh, sw = small.shape[:2]
  speed = rng.uniform(0, max_speed) * (num_frames > 1)
  angle = rng.uniform(0, 2 * np.pi)
  dx, dy = speed * np.cos(angle), speed * np.sin(angle)
  zoom = rng.uniform(-max_zoom, max_zoom) * (num_frames > 1)
  travel_x, travel_y = abs(dx) * (num_frames - 1), abs(dy) * (num_frames - 1)
  margin = 1.0 + abs(zoom)
  room_x = max(sw - width * margin - travel_x, 0.0)
  room_y = max(sh - height * margin - travel_y, 0.0)
  x0 = rng.uniform(0, room_x) + (travel_x if dx < 0 else 0) + width * (margin - 1) / 2
  y0 = rng.uniform(0, room_y) + (travel_y if dy < 0 else 0) + height * (margin - 1) / 2
  frames = []
  for t in range(num_frames):
    scale = 1.0 + zoom * t / max(num_frames - 1, 1)
    cx, cy = x0 + width / 2 + dx * t, y0 + height / 2 + dy * t
    # Output pixel (u, v) samples photo point (cx + (u - w/2)/scale, cy + (v - h/2)/scale).
    matrix = np.array([[scale, 0, width / 2 - scale * cx], [0, scale, height / 2 - scale * cy]])
    frames.append(cv2.warpAffine(small, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT))
  return np.stack(frames), {"pan": (float(dx), float(dy)), "zoom": float(zoom)}


class PanZoomSource:
  """Pans and zooms over a fixed list of photos; `photos` is a sequence of uint8 [H, W, 3]."""

  def __init__(self, photos: list[np.ndarray], seed: int, num_frames: int, height: int, width: int):
    if not photos:
      raise ValueError("pan/zoom source: no photos")
    self.photos, self.seed = photos, seed
    self.num_frames, self.height, self.width = num_frames, height, width

  def clip(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, index])
    photo = self.photos[rng.integers(len(self.photos))]
    return pan_zoom_clip(photo, rng, self.num_frames, self.height, self.width)[0]


def _list_files(folder: str, extensions: tuple[str, ...], field: str) -> list[str]:
  if not folder or not os.path.isdir(folder):
    raise FileNotFoundError(f"data.{field}: folder not found: {folder!r}")
  files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                 if f.lower().endswith(extensions))
  if not files:
    raise ValueError(f"data.{field}: no files ending in {extensions} under {folder}")
  return files


def _split_files(files: list[str], split: str, held_out_fraction: float) -> list[str]:
  """Every k-th file goes to 'eval' so both splits are non-empty when there are >= 2 files."""
  if len(files) < 2:
    return files
  every = max(2, round(1 / max(held_out_fraction, 1e-6)))
  chosen = [f for i, f in enumerate(files) if (i % every == every - 1) == (split == "eval")]
  return chosen or files


def _resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [T, H, W, 3] -> [T, height, width, 3]: scale the shorter side, crop the centre."""
  h, w = frames.shape[1:3]
  scale = max(height / h, width / w)
  nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
  top, left = (nh - height) // 2, (nw - width) // 2
  return np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA)[top:top + height,
                                                                         left:left + width]
                   for f in frames])


class VideoFolderSource:
  """Clips of `num_frames` frames at `fps`, cut without overlap from every video of a folder."""

  def __init__(self, files: list[str], seed: int, num_frames: int, height: int, width: int,
               fps: float):
    from vp_jax import media  # pylint: disable=g-import-not-at-top
    self._read_video = media.read_video
    self.seed, self.num_frames, self.height, self.width, self.fps = seed, num_frames, height, width, fps
    self.clips, self.skipped = [], []
    for path in files:
      try:
        frames, rate = self._read_video(path)
      except (ValueError, FileNotFoundError) as e:
        self.skipped.append(f"{path}: {e}")
        continue
      times = np.arange(0, len(frames) / (rate or fps), 1.0 / fps)
      for start in range(0, len(times) - num_frames + 1, num_frames):
        self.clips.append((path, start))
    if not self.clips:
      raise ValueError(f"data.video_folder: no video yields {num_frames} frames at {fps} fps "
                       f"(files={len(files)}, skipped={self.skipped[:3]})")
    self._order = np.random.default_rng(seed).permutation(len(self.clips))

  @functools.lru_cache(maxsize=8)
  def _resampled(self, path: str) -> np.ndarray:
    frames, rate = self._read_video(path)
    times = np.arange(0, len(frames) / (rate or self.fps), 1.0 / self.fps)
    return frames[np.minimum(np.round(times * (rate or self.fps)).astype(int), len(frames) - 1)]

  def clip(self, index: int) -> np.ndarray:
    path, start = self.clips[self._order[index % len(self.clips)]]
    frames = self._resampled(path)[start:start + self.num_frames]
    return _resize_center_crop(frames, self.height, self.width)


class DemoSource:
  """The embedded demo clips (square frames; their size is `height`)."""

  def __init__(self, split: str, seed: int, num_frames: int, height: int, width: int, fps: float,
               handwritings_per_digit: int):
    if height != width:
      raise ValueError(f"data.source='demo' makes square clips; got height={height}, width={width}")
    if not isinstance(handwritings_per_digit, (int, np.integer)) or handwritings_per_digit < 0:
      raise ValueError(f"data.handwritings_per_digit must be an int >= 0 (0 = every handwriting), "
                       f"got {handwritings_per_digit!r}")
    self.split = "train" if split == "train" else "validation"
    self.seed, self.num_frames, self.size, self.fps = seed, num_frames, height, fps
    self.handwritings_per_digit = handwritings_per_digit

  def clip(self, index: int) -> np.ndarray:
    from data_pipelines import demo  # pylint: disable=g-import-not-at-top
    return demo.demo_clip(self.split, index, self.seed, size=self.size, num_frames=self.num_frames,
                          fps=self.fps, handwritings_per_digit=self.handwritings_per_digit).video


class CyclingCache:
  """Cycles over the first `max_clips` clips of `source`, keeping them in memory.

  For sources that are slow to render (the demo) when a fixed training set is wanted.
  """

  def __init__(self, source, max_clips: int):
    self.source, self.max_clips, self._clips = source, max_clips, {}

  def clip(self, index: int) -> np.ndarray:
    key = index % self.max_clips
    if key not in self._clips:
      self._clips[key] = self.source.clip(key)
    return self._clips[key]


def _photo_pans(data, split, seed, num_frames):
  names = TRAIN_PHOTOS if split == "train" else HELD_OUT_PHOTOS
  return PanZoomSource([_skimage_photo(n) for n in names], seed, num_frames, data.height, data.width)


def _image_folder(data, split, seed, num_frames):
  from vp_jax import media  # pylint: disable=g-import-not-at-top
  files = _split_files(_list_files(data.path, IMAGE_EXTENSIONS, "path"), split, data.held_out_fraction)
  return PanZoomSource([_as_rgb(media.read_image(f)) for f in files], seed, num_frames,
                       data.height, data.width)


def _video_folder(data, split, seed, num_frames):
  files = _split_files(_list_files(data.path, VIDEO_EXTENSIONS, "path"), split, data.held_out_fraction)
  return VideoFolderSource(files, seed, num_frames, data.height, data.width, data.fps)


def _demo(data, split, seed, num_frames):
  from data_pipelines import demo  # pylint: disable=g-import-not-at-top
  return DemoSource(split, seed, num_frames, data.height, data.width, data.fps,
                    data.get("handwritings_per_digit", demo.HANDWRITINGS_PER_DIGIT))


SOURCES: dict[str, Callable] = {
    "photo_pans": _photo_pans,
    "image_folder": _image_folder,
    "video_folder": _video_folder,
    "demo": _demo,
}


def make_source(data: ml_collections.ConfigDict, split: str, num_frames: int | None = None):
  """The clip source named by `data.source` for `split` ('train' or 'eval').

  `num_frames` overrides `data.num_frames` (1 for the image phase).
  """
  if data.source not in SOURCES:
    raise ValueError(f"data.source={data.source!r}: expected one of {sorted(SOURCES)}")
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: expected one of {SPLITS}")
  seed = data.seed if split == "train" else data.seed + 1_000_003
  source = SOURCES[data.source](data, split, seed, num_frames or data.num_frames)
  if data.max_clips < 0:
    raise ValueError(f"data.max_clips={data.max_clips}: expected 0 (unbounded) or a positive count")
  return CyclingCache(source, data.max_clips) if data.max_clips else source


def batch_of_clips(source, first_index: int, batch_size: int, process_index: int = 0,
                   process_count: int = 1) -> np.ndarray:
  """This process's rows of global batch starting at clip `first_index`: uint8 [B/P, T, H, W, 3]."""
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by process_count={process_count}")
  per_process = batch_size // process_count
  start = first_index + process_index * per_process
  return np.stack([source.clip(i) for i in range(start, start + per_process)])
