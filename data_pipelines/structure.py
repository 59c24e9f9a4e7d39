"""Structure clips for stylization: 2 optical-flow channels + 1 depth channel, as RGB.

The stylization task conditions on a clip's structure (motion and layout) without its
appearance. Channels of the structure clip, uint8 [T, H, W, 3]:
  0, 1  optical flow (dx, dy) from frame t-1 to t (frame 0 repeats the 0 -> 1 flow),
        OpenCV Farneback, mapped to 128 + 127 * flow / max_flow (max_flow = 1/8 of the
        frame width by default, larger motion clips)
  2     depth, normalised per clip to 0..255 (near = bright)

Depth. A user-provided model is used when given: any callable `depth_fn(uint8 [T, H, W, 3])
-> float [T, H, W]` (larger = nearer), or a "module:function" string naming one (e.g. a
MiDaS/Depth-Anything wrapper the user installs). Without one, an OFFLINE SUBSTITUTE is
used, `luminance_layout_depth`: the clip's luminance low-passed through a Gaussian pyramid
(a 1/8-resolution image upsampled back). It is not metric or even relative depth; it is a
coarse layout cue (where the bright and dark masses of the scene are) that carries no
texture or colour, which is what stylization needs from the third channel when no depth
model is available. The spec records which depth source made the shards.
"""
from __future__ import annotations

import importlib
from typing import Callable

import cv2
import numpy as np

DepthFn = Callable[[np.ndarray], np.ndarray]
SUBSTITUTE_DEPTH_NAME = "luminance_layout_depth"


def luminance_layout_depth(video: np.ndarray, levels: int = 3) -> np.ndarray:
    """float32 [T, H, W]: per-frame luminance low-passed by `levels` pyramid steps."""
    out = []
    for frame in video:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        small = grey
        for _ in range(levels):
            if min(small.shape) < 2:
                break
            small = cv2.pyrDown(small)
        out.append(cv2.resize(small, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)


def load_depth_fn(spec: str | DepthFn | None) -> tuple[DepthFn, str]:
    """(depth function, name recorded in the spec) from a callable, "module:function" or None."""
    if spec is None or spec == "":
        return luminance_layout_depth, SUBSTITUTE_DEPTH_NAME
    if callable(spec):
        return spec, getattr(spec, "__qualname__", repr(spec))
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ValueError(f"depth model must be 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"depth model {spec!r} cannot be loaded: {e}") from None
    if not callable(fn):
        raise ValueError(f"depth model {spec!r} is not callable")
    return fn, str(spec)


def optical_flow(video: np.ndarray) -> np.ndarray:
    """float32 [T, H, W, 2]: Farneback flow (dx, dy) in pixels from frame t-1 to frame t."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    if len(grey) < 2:
        raise ValueError(f"optical flow needs >= 2 frames, got {len(grey)}")
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=9,
                                          iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
             for a, b in zip(grey[:-1], grey[1:])]
    return np.stack([flows[0]] + flows).astype(np.float32)


def structure_clip(video: np.ndarray, depth_fn: DepthFn = luminance_layout_depth,
                   max_flow: float | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] (flow dx, flow dy, depth) of an RGB clip uint8 [T, H, W, 3]."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"structure_clip expects uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    max_flow = max_flow or video.shape[2] / 8
    flow = 128 + 127 * np.clip(optical_flow(video) / max_flow, -1, 1)
    depth = np.asarray(depth_fn(video), np.float32)
    if depth.shape != video.shape[:3]:
        raise ValueError(f"depth model returned shape {depth.shape}, expected {video.shape[:3]}")
    if not np.all(np.isfinite(depth)):
        raise ValueError("depth model returned NaN or Inf")
    lo, hi = float(depth.min()), float(depth.max())
    depth = (depth - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(depth)
    return np.clip(np.rint(np.concatenate([flow, depth[..., None]], -1)), 0, 255).astype(np.uint8)
