"""How readable the demo's digit is from real video tokens: a reference for video-to-audio.

Video-to-audio's pitch names the digit the video shows, so the LM has to read the digit from
the clip's video tokens. This probe asks how far that is possible at all from the tokens the
LM trains on: it fits a logistic regression on the training split's tokens around the sprite
and scores held-out clips. The probe gets what the LM must find for itself, the sprite's place
(the demo's truth positions), so it reads more easily than the LM does; its held-out accuracy
is a reference for `video_to_audio/pitch_class_correct`, not a bound.

    python -m vp_jax.evaluation.token_probe --shards=<workdir>/shards --split=test

Features, per latent frame: the token window over the sprite's latent cells plus a one-cell
ring (the cell of the sprite's top-left corner at that latent frame's last pixel frame), each
id as its signed bits (0 outside the frame). The demo puts the sprite on the latent grid at
every keyframe, so a handwriting gives the same window wherever it moves.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

import numpy as np

from data_pipelines.seqio_tasks import ShardDataset


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Accuracy of the probe on its training clips and on the held-out split, per true digit."""
    train_accuracy: float
    accuracy: float
    by_digit: dict[int, tuple[int, int]]  # digit -> (right, clips)
    num_train: int
    num_eval: int


def sprite_windows(video_tokens: np.ndarray, truth: dict, frame_size: int, source: str) -> np.ndarray:
    """int [t, n, n] token windows over the sprite (-1 outside the frame), n = sprite cells + 2."""
    t, h, w = video_tokens.shape
    if h != w or frame_size % w:
        raise ValueError(f"{source}: video_tokens latent grid {h}x{w} does not tile a {frame_size}-pixel frame")
    for key in ("positions", "digit", "sprite_size"):
        if key not in truth:
            raise ValueError(f"{source}: metadata_json truth has no {key!r} (not a demo clip?)")
    cell = frame_size // w
    positions = np.asarray(truth["positions"], np.float64)
    if t > 1 and (len(positions) - 1) % (t - 1):
        raise ValueError(f"{source}: {len(positions)} truth positions do not match {t} latent frames")
    stride = (len(positions) - 1) // (t - 1) if t > 1 else 0
    n = math.ceil(truth["sprite_size"] / cell) + 2
    padded = np.pad(video_tokens, ((0, 0), (1, n), (1, n)), constant_values=-1)
    windows = []
    for k in range(t):
        x, y = positions[k * stride]
        if not (0 <= x <= frame_size and 0 <= y <= frame_size):
            raise ValueError(f"{source}: truth position {k * stride} ({x}, {y}) lies outside the frame")
        col, row = int(round(x)) // cell, int(round(y)) // cell
        windows.append(padded[k, row:row + n, col:col + n])
    return np.stack(windows)


def window_features(windows: np.ndarray, bits: int) -> np.ndarray:
    """float32 [clips, features]: each id's `bits` bits as +-1, 0 where the window leaves the frame."""
    signs = ((windows[..., None] >> np.arange(bits)) & 1) * 2.0 - 1.0
    signs = np.where(windows[..., None] < 0, 0.0, signs)
    return signs.reshape(len(windows), -1).astype(np.float32)


def read_split(dataset: ShardDataset, split: str, frame_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows int [clips, t, n, n], digits int [clips]) of `split`'s clips."""
    shards = dataset.directory
    windows, digits = [], []
    for example in dataset.read(split, ("video_tokens", "metadata_json")).as_numpy_iterator():
        source = f"{shards} {split} {example['clip_id'].decode()}"
        if example["video_tokens"].size == 0:
            raise ValueError(f"{source}: no video_tokens")
        truth = json.loads(example["metadata_json"] or b"{}").get("truth", {})
        windows.append(sprite_windows(example["video_tokens"], truth, frame_size, source))
        digits.append(int(truth["digit"]))
    if not windows:
        raise ValueError(f"{shards}: split {split!r} has no clips")
    return np.stack(windows), np.asarray(digits)


def run_probe(shards: str, split: str = "test", frame_size: int = 32, regularization: float = 0.1) -> ProbeResult:
    """Fits the probe on `shards`' train split and scores `split`."""
    from sklearn.linear_model import LogisticRegression

    dataset = ShardDataset.open(shards)
    bits = int(dataset.spec.vocabulary["visual_bits"])
    train_windows, train_digits = read_split(dataset, "train", frame_size)
    eval_windows, eval_digits = read_split(dataset, split, frame_size)
    if len(np.unique(train_digits)) < 2:
        raise ValueError(f"{shards}: the train split shows only digit(s) {np.unique(train_digits).tolist()}")
    probe = LogisticRegression(C=regularization, max_iter=3000)
    train_features = window_features(train_windows, bits)
    probe.fit(train_features, train_digits)
    train_accuracy = float(np.mean(probe.predict(train_features) == train_digits))
    predicted = probe.predict(window_features(eval_windows, bits))
    by_digit = {int(d): (int(np.sum(predicted[eval_digits == d] == d)), int(np.sum(eval_digits == d)))
                for d in np.unique(eval_digits)}
    return ProbeResult(train_accuracy, float(np.mean(predicted == eval_digits)), by_digit,
                       len(train_digits), len(eval_digits))


def main(argv: list[str] | None = None) -> ProbeResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, help="pre-tokenized demo shards (spec.json)")
    parser.add_argument("--split", default="test", help="held-out split to score")
    parser.add_argument("--frame_size", type=int, default=32, help="the clips' frame side in pixels")
    parser.add_argument("--regularization", type=float, default=0.1, help="inverse L2 strength (sklearn C)")
    args = parser.parse_args(argv)
    result = run_probe(args.shards, args.split, args.frame_size, args.regularization)
    digits = " ".join(f"{d}:{right}/{n}" for d, (right, n) in sorted(result.by_digit.items()))
    print(f"[token_probe] train {result.train_accuracy:.3f} ({result.num_train} clips); {args.split} "
          f"{result.accuracy:.3f} ({result.num_eval} clips); by digit {digits}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
