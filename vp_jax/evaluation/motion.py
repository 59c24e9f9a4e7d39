"""Reads the sprite's motion out of a clip: direction, speed, and how well it fits the truth.

The demo moves the sprite along one axis at a constant speed and reflects it at the frame
edges (`data_pipelines.demo.motion.bouncing_positions`). Along an axis such a path is a
triangle wave of the unfolded coordinate p0 + v t:

    fold(q) = L - | (q mod 2L) - L |,   L = frame side - sprite side

The tracked centroids (`sprite.locate_sprite`) are fitted by that model on the axis that
moves most: a grid over the signed velocity v and the start p0, with the centroid's
constant offset from the sprite's corner taken as the median residual. The best fit gives
the initial direction (the sign of v), the speed |v| and a residual that
says how much the clip's motion looks like a bounce at all. Fitting the whole path instead
of reading the first frames keeps the direction right when the sprite bounces early and
when single frames are mis-tracked.

A sprite that leaves the wall it starts against fits two paths about equally well: moving
away, or moving into the wall and bouncing at once; so does one first seen a few frames
in. The fit therefore leaves out paths that bounce within their first `steady_steps`
visible steps, and the direction read is the one the sprite is first seen moving in. A
whole demo clip starts against the wall behind its sprite and crosses the frame before its
first bounce (frame 10 at the fast speed), so its score allows none in the first
`WHOLE_CLIP_STEADY_STEPS` (a generated clip's slow or uneven first steps then still read
as the way it goes); a continuation's tail may reach a wall on its first step, so its
score allows a bounce from the second.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.demo.motion import DIRECTIONS
from vp_jax.evaluation import sprite

SPEED_GRID = np.round(np.arange(0.2, 3.0001, 0.05), 4)  # px/frame at 32x32, scaled by size
START_STEP = 0.25  # px
MIN_TRAVEL_PX = 1.0  # a sprite whose tracked path spans less than this is "static"
WHOLE_CLIP_STEADY_STEPS = 4  # half a second at 8 fps: one latent frame of the causal tokenizer


@dataclasses.dataclass(frozen=True)
class MotionEstimate:
    direction: str  # initial direction, a key of DIRECTIONS; "static"; "none" (no sprite)
    speed_px_per_frame: float  # NaN when no sprite was found
    fit_error_px: float  # mean |tracked - fitted| along the moving axis; NaN likewise
    centroids: np.ndarray  # float64 [T, 2] (x, y); NaN where the sprite was not found
    found_fraction: float


def fold(unfolded: np.ndarray, limit: float) -> np.ndarray:
    """Reflects positions into [0, limit] (the demo's wall bounces), elementwise."""
    period = 2.0 * limit
    return limit - np.abs(np.mod(unfolded, period) - limit)


def _fit_axis(track: np.ndarray, limit: float, scale: float, steady_steps: int) -> tuple[float, float]:
    """(velocity, mean abs error) of the best triangle-wave fit to track [T] (NaN-aware) among
    the paths that do not bounce within their first `steady_steps` visible steps."""
    valid = ~np.isnan(track)
    t = np.arange(len(track))[valid]
    y = track[valid]
    velocities = np.concatenate([-SPEED_GRID[::-1], SPEED_GRID]) * scale
    starts = np.arange(0.0, limit + 1e-9, START_STEP)
    model = fold(starts[None, :, None] + velocities[:, None, None] * t[None, None, :], limit)
    residual = y - model  # [V, P, T]
    offset = np.median(residual, axis=-1, keepdims=True)
    error = np.abs(residual - offset).mean(-1)
    ahead = starts[None, :] + velocities[:, None] * (t[0] + steady_steps)  # unfolded: linear
    error = np.where((ahead < 0) | (ahead > limit), np.inf, error)
    v, p = np.unravel_index(np.argmin(error), error.shape)
    return float(velocities[v]), float(error[v, p])


def estimate_motion(video: np.ndarray, sprite_size: int | None = None, steady_steps: int = 1) -> MotionEstimate:
    """Tracks the sprite in uint8 [T, H, W, 3] and fits the demo's bouncing motion (with no
    bounce in the first `steady_steps` visible steps, see the module docstring)."""
    video = sprite.check_video(video)
    t, h, w, _ = video.shape
    if h != w:
        raise ValueError(f"the demo's clips are square; got frames {h}x{w}")
    if t < 3:
        raise ValueError(f"motion needs at least 3 frames; got {t}")
    sprite_size = sprite.sprite_size_for(w) if sprite_size is None else sprite_size
    centroids, found = sprite.locate_sprite(video, sprite_size)
    if found.sum() < 3:
        return MotionEstimate("none", float("nan"), float("nan"), centroids, float(found.mean()))
    spread = np.nanmax(centroids, axis=0) - np.nanmin(centroids, axis=0)
    axis = int(np.argmax(spread))
    if spread[axis] < MIN_TRAVEL_PX:
        return MotionEstimate("static", 0.0, float(np.nanmean(np.abs(centroids[:, axis] - np.nanmedian(centroids[:, axis])))),
                              centroids, float(found.mean()))
    limit = float(w - sprite_size)
    velocity, error = _fit_axis(centroids[:, axis], limit, w / 32.0, steady_steps)
    sign = int(np.sign(velocity))  # the direction of the first visible steps
    step = (sign, 0) if axis == 0 else (0, sign)
    direction = next(name for name, d in DIRECTIONS.items() if d == step)
    return MotionEstimate(direction, abs(velocity), error, centroids, float(found.mean()))


def trajectory_error_px(centroids: np.ndarray, true_positions: np.ndarray) -> float:
    """Mean distance (px) between tracked and true paths after removing their constant offset."""
    centroids = np.asarray(centroids, np.float64)
    true_positions = np.asarray(true_positions, np.float64)
    if centroids.shape != true_positions.shape:
        raise ValueError(f"tracked path {centroids.shape} and truth positions {true_positions.shape} differ")
    valid = ~np.isnan(centroids).any(axis=1)
    if not valid.any():
        return float("nan")
    delta = centroids[valid] - true_positions[valid]
    return float(np.linalg.norm(delta - np.median(delta, axis=0), axis=1).mean())


# Each direction's reverse, from the demo's own (dx, dy) table.
OPPOSITE = {name: next(other for other, o in DIRECTIONS.items() if o == (-d[0], -d[1]))
            for name, d in DIRECTIONS.items()}


def truth_from_frame(truth: dict, start: int) -> dict:
    """The demo truth of frames `start`.. of a clip, as if they were a clip of their own.

    Positions and bounce frames are cut and renumbered and `first_frame` is `start`; the
    initial direction is the one in effect at frame `start` (each bounce at a frame <= `start`
    has reversed it: the demo's motion runs along one axis). Scores of a continuation's
    generated tail use this.
    """
    if start == 0:
        return truth
    if "direction" not in truth:
        raise ValueError(f"truth is missing 'direction'; got keys {sorted(truth)}")
    bounces = [int(b) for b in truth.get("bounce_frames", [])]
    direction = truth["direction"]
    if sum(b <= start for b in bounces) % 2:
        direction = OPPOSITE[direction]
    out = dict(truth, direction=direction, bounce_frames=[b - start for b in bounces if b > start],
               first_frame=start)
    if truth.get("positions") is not None:
        out["positions"] = list(truth["positions"])[start:]
    return out


def score_motion(video: np.ndarray, truth: dict) -> dict[str, float]:
    """Motion scores of one clip against its demo `truth` dict.

    Returns {'direction_correct': 0/1, 'speed_class_correct': 0/1, 'speed_abs_error',
    'motion_fit_error_px', 'sprite_found_fraction'} plus 'trajectory_error_px' when the
    truth has per-frame positions of the same length (continuation, reconstructions).
    A clip with no visible sprite scores 0 on the shares and NaN on the errors (aggregation
    skips NaN and counts only finite values).
    """
    for key in ("direction", "speed_px_per_frame"):
        if key not in truth:
            raise ValueError(f"truth is missing {key!r}; got keys {sorted(truth)}")
    video = sprite.check_video(video)
    size = video.shape[2]
    steady_steps = 1 if truth.get("first_frame") else WHOLE_CLIP_STEADY_STEPS
    estimate = estimate_motion(video, truth.get("sprite_size"), steady_steps)
    true_speed = float(truth["speed_px_per_frame"])
    if estimate.direction == "none":
        return {"direction_correct": 0.0, "speed_class_correct": 0.0, "speed_abs_error": float("nan"),
                "motion_fit_error_px": float("nan"), "sprite_found_fraction": estimate.found_fraction}
    slow, fast = size / 32.0, 2.0 * size / 32.0
    speed_class = slow if abs(estimate.speed_px_per_frame - slow) < abs(estimate.speed_px_per_frame - fast) else fast
    true_class = slow if abs(true_speed - slow) < abs(true_speed - fast) else fast
    scores = {
        "direction_correct": float(estimate.direction == truth["direction"]),
        "speed_class_correct": float(speed_class == true_class and estimate.direction != "static"),
        "speed_abs_error": abs(estimate.speed_px_per_frame - true_speed),
        "motion_fit_error_px": estimate.fit_error_px,
        "sprite_found_fraction": estimate.found_fraction,
    }
    positions = truth.get("positions")
    if positions is not None and len(positions) == len(video):
        scores["trajectory_error_px"] = trajectory_error_px(estimate.centroids, positions)
    return scores
