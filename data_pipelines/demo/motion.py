"""Straight-line motion that bounces off the frame edges, with its exact ground truth.

The sprite's top-left corner moves `speed` pixels per frame along one axis; when a step
would leave [0, limit] it reflects (the overshoot folds back) and the direction reverses.
The frame index at which a reflection happens is a bounce frame: the sound track clicks
there and the evaluator checks it.
"""
from __future__ import annotations

import numpy as np

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy)


def bouncing_positions(start_xy: tuple[float, float], direction: str, speed: float,
                       num_frames: int, limit: float) -> tuple[np.ndarray, list[int]]:
    """Positions float64 [num_frames, 2] as (x, y) and the sorted bounce frame indices.

    Args:
      start_xy: top-left of the sprite at frame 0, each coordinate in [0, limit].
      direction: initial direction, a key of DIRECTIONS.
      speed: pixels per frame (> 0, at most `limit` so one step reflects at most once).
      limit: largest allowed coordinate (frame size - sprite size).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    if not 0 < speed <= limit:
        raise ValueError(f"speed must be in (0, limit={limit}], got {speed}")
    if not all(0 <= c <= limit for c in start_xy):
        raise ValueError(f"start position {start_xy} outside [0, {limit}]")
    step = np.array(DIRECTIONS[direction], np.float64) * speed
    pos = np.array(start_xy, np.float64)
    positions, bounces = [pos.copy()], []
    for frame in range(1, num_frames):
        pos = pos + step
        for axis in range(2):
            if pos[axis] < 0 or pos[axis] > limit:
                pos[axis] = -pos[axis] if pos[axis] < 0 else 2 * limit - pos[axis]
                step[axis] = -step[axis]
                bounces.append(frame)
        positions.append(pos.copy())
    return np.stack(positions), bounces
