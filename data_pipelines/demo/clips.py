"""Demo clips: a handwritten digit moving over a dimmed photo, with a tone and bounce clicks.

Every clip is a pure function of (split, index, seed, geometry): clip i of a split is the
same whether 10 or 10,000 clips are asked for, so workers can generate disjoint index
ranges in parallel and a resumed job regenerates exactly what it lost.

    clip = demo_clip("train", 0, seed=0)
    clip.video   uint8 [17, 32, 32, 3]      17 frames at 8 fps (2.125 s)
    clip.audio   float32 [34000]            16 kHz mono
    clip.caption "the digit three moves left quickly over the coffee photo"
    clip.truth   {"digit": 3, "direction": "left", "speed_px_per_frame": 2.0,
                  "positions": [[x, y], ...], "bounce_frames": [9], "pitch_hz": 311.1,
                  "background": "coffee", "digit_image_index": 1234, "sprite_size": 12}

Speeds are 1 (slow) or 2 (fast) pixels per frame at 32x32 and scale with the frame size;
the sprite is 3/8 of the frame side (12 px at 32x32).

Everything in a clip that the caption does not name is kept to what the scores need, so a
CPU-sized LM spends its few steps on the digit, the motion and the sound:
- the background is one fixed soft wash per photo (the photo's central square averaged to
  4x4 colours), so the caption's photo name determines it;
- the sprite starts on a grid of size/8 pixels (4 px at 32x32, the demo tokenizer's latent
  cell). With keyframes 4 frames apart (the causal tokenizer's temporal stride), speeds of 1
  or 2 px/frame and a wall at 5/8 of the side, every latent keyframe finds the sprite on that
  grid again, bounces included, so each digit's token pattern recurs across clips instead
  of smearing over 16 sub-cell offsets;
- the sprite starts against the wall behind its heading (the right wall when it moves left)
  at a random interior cell of the other axis, and crosses the frame. The caption's
  direction word then decides where frame 0 shows the sprite, as its digit word decides
  the shape. With a random start cell, the direction is ~1.4 nats of a clip's ~110, seen
  only from the first moving frame on, and the main job's LM barely learned it (generated
  clips moved in the captioned direction 0.42 of the time at temperature 0.7; an LM
  trained 3x as long, 0.56 of 32);
- the handwriting is one of the split's first HANDWRITINGS_PER_DIGIT real images of the
  digit (the splits' images stay disjoint, so held-out clips show unseen handwriting). A
  digit then has a few token patterns for the LM to learn, not ~140; the digit classifier
  that scores generated clips still trains on every image (`handwritings_per_digit=0`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import cv2
import numpy as np

from data_pipelines.demo import materials, motion, sound

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEEDS = {"slowly": 1.0, "quickly": 2.0}  # caption word -> pixels per frame at 32x32
VERSION = 5  # bumps the main job's demo-stage cache when what a clip looks like changes
BACKGROUND_DIMMING = 0.45
BACKGROUND_CELLS = 4
POSITION_GRID_CELLS = 8  # sprite starts lie on a grid of size / 8 pixels
SPRITE_INK_GAIN = 1.5
HANDWRITINGS_PER_DIGIT = 4  # per split; 0 = every image of the digit
SPRITE_COLOR = np.array([255.0, 250.0, 235.0], np.float32)


@dataclasses.dataclass(frozen=True)
class DemoClip:
    clip_id: str
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [samples]
    caption: str
    truth: dict


def caption_for(digit: int, direction: str, speed_word: str, background: str) -> str:
    return f"the digit {DIGIT_NAMES[digit]} moves {direction} {speed_word} over the {background} photo"


def num_audio_samples(num_frames: int, fps: float, sample_rate: int) -> int:
    """Audio samples covering `num_frames` frames: 17 frames at 8 fps, 16 kHz -> 34000."""
    return int(round(num_frames / fps * sample_rate))


def _check_geometry(size: int, num_frames: int, fps: float, sample_rate: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"demo size must be an int >= 16 pixels, got {size!r}")
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"demo num_frames must be a positive int, got {num_frames!r}")
    if not fps > 0:
        raise ValueError(f"demo fps must be > 0, got {fps!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"demo sample_rate must be a positive int, got {sample_rate!r}")


@functools.lru_cache(maxsize=None)
def background(name: str, size: int) -> np.ndarray:
    """float32 [size, size, 3]: the fixed background of photo `name`, dimmed.

    The photo's central square is averaged down to BACKGROUND_CELLS x BACKGROUND_CELLS and
    stretched back smoothly: a soft wash of the photo's colours, not its fine texture. Texture
    at 32x32 is what a CPU-sized tokenizer cannot keep and what a CPU-sized LM would spend its
    capacity on; the scored content (digit, motion, sound) is all in the sprite and the sound.
    """
    photo = materials.background_photo(name)
    h, w, _ = photo.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    cells = cv2.resize(photo[top:top + side, left:left + side],
                       (BACKGROUND_CELLS, BACKGROUND_CELLS), interpolation=cv2.INTER_AREA)
    wash = cv2.resize(cells.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    wash = wash * BACKGROUND_DIMMING
    wash.setflags(write=False)
    return wash


def _render(background: np.ndarray, digit_image: np.ndarray, positions: np.ndarray,
            sprite_size: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: the sprite alpha-blended over the background at each position.

    The ink (0..1) is boosted 1.5x so strokes are solid: ink above 2/3 is fully opaque.
    """
    ink = cv2.resize(digit_image, (sprite_size, sprite_size), interpolation=cv2.INTER_LINEAR)
    alpha = np.clip(ink * SPRITE_INK_GAIN, 0.0, 1.0)[..., None]
    frames = np.repeat(background[None], len(positions), axis=0)
    for frame, (x, y) in zip(frames, np.rint(positions).astype(np.int64)):
        patch = frame[y:y + sprite_size, x:x + sprite_size]
        patch[...] = patch * (1 - alpha) + SPRITE_COLOR * alpha
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def demo_clip(split: str, index: int, seed: int, size: int = 32, num_frames: int = 17,
              fps: float = 8, sample_rate: int = 16000,
              handwritings_per_digit: int = HANDWRITINGS_PER_DIGIT) -> DemoClip:
    """Clip number `index` of `split` for `seed` (see the module docstring).

    `handwritings_per_digit` > 0 draws the digit's image from the split's first that many
    images of it; 0 from all of them.
    """
    materials.check_split(split)
    _check_geometry(size, num_frames, fps, sample_rate)
    if not isinstance(handwritings_per_digit, (int, np.integer)) or handwritings_per_digit < 0:
        raise ValueError(f"handwritings_per_digit must be an int >= 0, got {handwritings_per_digit!r}")
    if index < 0:
        raise ValueError(f"demo clip index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed), materials.SPLITS.index(split), int(index)])
    images, labels, image_index = materials.digit_split(split)

    digit = int(rng.integers(10))
    choices = np.flatnonzero(labels == digit)
    pick = int(rng.choice(choices[:handwritings_per_digit] if handwritings_per_digit else choices))
    direction = str(rng.choice(sorted(motion.DIRECTIONS)))
    speed_word = str(rng.choice(sorted(SPEEDS)))
    background_name = str(rng.choice(sorted(materials.BACKGROUNDS)))

    sprite_size = max(4, int(round(size * 3 / 8)))
    limit = size - sprite_size
    speed = SPEEDS[speed_word] * size / 32
    # The sprite enters from the side opposite its heading (against the right wall when it
    # moves left, ...) at an interior grid cell of the other axis, so it crosses the frame
    # and the caption's direction word also decides where the first frame shows it.
    dx, dy = motion.DIRECTIONS[direction]
    grid = np.arange(0, limit + 1, max(1, size // POSITION_GRID_CELLS))
    interior = grid[(grid > 0) & (grid < limit)]
    start = tuple(int(grid[-1]) if d < 0 else 0 if d > 0 else int(rng.choice(interior)) for d in (dx, dy))
    positions, bounces = motion.bouncing_positions(start, direction, speed, num_frames, limit)
    video = _render(background(background_name, size), images[pick], positions, sprite_size)
    audio = sound.demo_audio(digit, bounces, fps, num_audio_samples(num_frames, fps, sample_rate),
                             sample_rate, rng)
    truth = {
        "digit": digit,
        "direction": direction,
        "speed_px_per_frame": float(speed),
        "positions": positions.tolist(),
        "bounce_frames": bounces,
        "pitch_hz": sound.digit_pitch_hz(digit),
        "background": background_name,
        "digit_image_index": int(image_index[pick]),
        "sprite_size": sprite_size,
    }
    return DemoClip(clip_id=f"demo-{split}-s{seed}-{index:07d}", video=video, audio=audio,
                    caption=caption_for(digit, direction, speed_word, background_name), truth=truth)


def generate_clips(split: str, num_clips: int, seed: int, size: int = 32, num_frames: int = 17,
                   fps: float = 8, sample_rate: int = 16000, start_index: int = 0,
                   handwritings_per_digit: int = HANDWRITINGS_PER_DIGIT) -> Iterator[DemoClip]:
    """Yields clips `start_index .. start_index + num_clips - 1` of `split`, in order."""
    materials.check_split(split)
    _check_geometry(size, num_frames, fps, sample_rate)
    if num_clips < 0:
        raise ValueError(f"num_clips must be >= 0, got {num_clips}")
    for index in range(start_index, start_index + num_clips):
        yield demo_clip(split, index, seed, size, num_frames, fps, sample_rate, handwritings_per_digit)
