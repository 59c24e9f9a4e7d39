"""Clip sources: deterministic random access, held-out photos, real mp4/png folders, errors."""
import ml_collections
import numpy as np
import pytest

from vp_jax import media
from vp_tokenizers.magvit2 import data


def _data_config(**overrides):
  config = ml_collections.ConfigDict(dict(source="photo_pans", path="", num_frames=9, height=16,
                                          width=24, fps=8.0, seed=0, held_out_fraction=0.5,
                                          max_clips=0))
  config.update(overrides)
  return config


def test_photo_pans_are_deterministic_per_index_and_shaped_as_configured():
  source = data.make_source(_data_config(), "train")
  a, b = source.clip(7), data.make_source(_data_config(), "train").clip(7)
  assert a.shape == (9, 16, 24, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, source.clip(8))


def test_pan_moves_the_picture_by_the_known_offset():
  photo = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
  clip, motion = data.pan_zoom_clip(photo, np.random.default_rng(3), 5, 32, 32, max_zoom=0.0)
  dx, dy = motion["pan"]
  assert motion["zoom"] == 0.0 and abs(dx) + abs(dy) > 0
  # Frame 4 is frame 0 shifted by (4dx, 4dy): compare the shared interior at integer shifts.
  sx, sy = int(round(4 * dx)), int(round(4 * dy))
  interior0 = clip[0, 8 + sy:24 + sy, 8 + sx:24 + sx].astype(float)
  interior4 = clip[4, 8:24, 8:24].astype(float)
  assert np.mean(np.abs(interior0 - interior4)) < np.mean(np.abs(clip[0, 8:24, 8:24] - interior4)) + 1e-9


def test_held_out_photos_are_disjoint_from_training_photos():
  assert not set(data.TRAIN_PHOTOS) & set(data.HELD_OUT_PHOTOS)
  train = data.make_source(_data_config(), "train")
  held_out = data.make_source(_data_config(), "eval")
  assert len(train.photos) == len(data.TRAIN_PHOTOS) and len(held_out.photos) == len(data.HELD_OUT_PHOTOS)


def test_video_folder_cuts_clips_from_a_real_mp4(tmp_path):
  frames = np.zeros((40, 32, 48, 3), np.uint8)
  frames[..., 0] = np.arange(40, dtype=np.uint8)[:, None, None] * 6
  media.write_mp4(str(tmp_path / "a.mp4"), frames, fps=16)
  media.write_mp4(str(tmp_path / "b.mp4"), frames[:20], fps=16)
  (tmp_path / "broken.mp4").write_bytes(b"not a video")
  source = data.make_source(_data_config(source="video_folder", path=str(tmp_path),
                                         held_out_fraction=0.01), "train")
  clip = source.clip(0)
  assert clip.shape == (9, 16, 24, 3)
  # Resampled from 16 fps to 8 fps: the red ramp climbs ~12 levels per kept frame.
  steps = np.diff(clip[:, 8, 12, 0].astype(int))
  assert np.all(steps > 6) and np.all(steps < 18)
  assert any("broken.mp4" in s for s in source.skipped)


def test_image_folder_pans_over_its_images(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
  source = data.make_source(_data_config(source="image_folder", path=str(tmp_path)), "train")
  assert source.clip(0).shape == (9, 16, 24, 3)
  stills = data.make_source(_data_config(source="image_folder", path=str(tmp_path)), "train", 1)
  assert stills.clip(3).shape == (1, 16, 24, 3)


def test_demo_source_yields_the_embedded_demo_clips():
  source = data.make_source(_data_config(source="demo", height=32, width=32, max_clips=2), "train")
  clip = source.clip(0)
  assert clip.shape == (9, 32, 32, 3)
  assert source.clip(2) is clip  # cycled from the in-memory cache


def test_demo_source_draws_each_digit_in_as_many_handwritings_as_configured():
  from data_pipelines import demo
  def handwritings(count):
    source = data.make_source(_data_config(source="demo", height=32, width=32, num_frames=1,
                                           handwritings_per_digit=count), "train")
    clips = [demo.demo_clip("train", i, seed=0, num_frames=1, handwritings_per_digit=count) for i in range(300)]
    assert all(np.array_equal(source.clip(i), clip.video) for i, clip in enumerate(clips))
    return {(clip.truth["digit"], clip.truth["digit_image_index"]) for clip in clips}
  assert len(handwritings(4)) <= 40 and len(handwritings(0)) > 100
  with pytest.raises(ValueError, match="handwritings_per_digit"):
    data.make_source(_data_config(source="demo", height=32, width=32, handwritings_per_digit=-1), "train")


def test_batches_split_rows_between_processes():
  source = data.make_source(_data_config(), "train")
  full = data.batch_of_clips(source, 10, 4)
  second_half = data.batch_of_clips(source, 10, 4, process_index=1, process_count=2)
  np.testing.assert_array_equal(second_half, full[2:])


def test_bad_source_and_missing_folder_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="data.source='nope'"):
    data.make_source(_data_config(source="nope"), "train")
  with pytest.raises(FileNotFoundError, match="folder not found"):
    data.make_source(_data_config(source="video_folder", path=str(tmp_path / "missing")), "train")
  with pytest.raises(ValueError, match="no files ending"):
    data.make_source(_data_config(source="image_folder", path=str(tmp_path)), "train")
