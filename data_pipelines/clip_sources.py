"""Work units that produce decoded clips: one media file, one demo clip, one raw-clip shard.

A unit is the smallest piece of work the pipeline schedules. Its `key` is stable across
runs and decides the output shard (every clip of a unit lands in the same shard), so a
resumed run can skip units whose shard is already finished without decoding anything.
`produce()` never raises for bad media: it returns no clips and a report entry with the
reason, so a batch job skips the file and loses nothing else.

    clips, report = MediaUnit(entry, geometry).produce()
    clips[0].video  uint8 [T, H, W, 3]     clips[0].audio  float32 [samples] or None
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from data_pipelines import media_decode
from data_pipelines.manifest import ManifestEntry


@dataclasses.dataclass
class Clip:
    clip_id: str
    split: str
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # float32 [samples] or None
    caption: str
    metadata: dict  # JSON-able: source, time span, ground truth


def shard_index(key: str, num_shards: int) -> int:
    """Deterministic shard of a unit key (sha1, so it is stable across Python processes)."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) % num_shards


@dataclasses.dataclass(frozen=True)
class MediaUnit:
    """One manifest row: a video file (all its clips) or an image (one 1-frame clip)."""

    entry: ManifestEntry
    geometry: media_decode.ClipGeometry

    @property
    def key(self) -> str:
        return self.entry.source_id

    @property
    def split(self) -> str:
        return self.entry.split

    def produce(self) -> tuple[list[Clip], dict]:
        e = self.entry
        report = {"source": e.source, "path": e.relpath, "kind": e.kind, "split": e.split}
        if e.error is not None:
            return [], {**report, "status": "skipped", "reason": e.error}
        try:
            if e.kind == "image":
                info, decoded = media_decode.decode_image(e.path, self.geometry)
                decoded = [decoded]
            else:
                info, decoded = media_decode.decode_video_clips(e.path, self.geometry)
        except FileNotFoundError:
            return [], {**report, "status": "skipped", "reason": f"{e.relpath}: file not found"}
        except media_decode.MediaDecodeError as err:
            return [], {**report, "status": "skipped", "reason": str(err)}
        clips = []
        for d in decoded:
            clip_id = f"{self.key}-c{d.index:04d}"
            meta = {"source": e.relpath, "start_seconds": round(d.start_seconds, 6),
                    "fps": self.geometry.fps, "audio_padded_samples": d.audio_padded_samples}
            clips.append(Clip(clip_id, e.split, d.video, d.audio, e.caption, meta))
        has_audio = clips[0].audio is not None
        report.update({
            "status": "ok", "clips": len(clips), "frames": int(clips[0].video.shape[0]),
            "fps": self.geometry.fps if e.kind == "video" else None,
            "size": [self.geometry.height, self.geometry.width],
            "audio_sample_rate": self.geometry.sample_rate if has_audio else None,
            "audio_channels": 1 if has_audio else None,
            "clip_ids": [c.clip_id for c in clips], "source_info": info.to_dict()})
        return clips, report


@dataclasses.dataclass(frozen=True)
class DemoUnit:
    """Clip `index` of the embedded demo's `split` (see data_pipelines.demo)."""

    split: str
    index: int
    seed: int
    size: int = 32
    num_frames: int = 17
    fps: float = 8.0
    sample_rate: int = 16000
    handwritings_per_digit: int | None = None  # None = data_pipelines.demo.HANDWRITINGS_PER_DIGIT

    @property
    def key(self) -> str:
        return f"demo-{self.split}-s{self.seed}-{self.index:07d}"

    def produce(self) -> tuple[list[Clip], dict]:
        from data_pipelines import demo

        handwritings = demo.HANDWRITINGS_PER_DIGIT if self.handwritings_per_digit is None else (
            self.handwritings_per_digit)
        c = demo.demo_clip(self.split, self.index, self.seed, self.size, self.num_frames,
                           self.fps, self.sample_rate, handwritings)
        meta = {"source": "demo", "seed": self.seed, "index": self.index, "fps": self.fps,
                "truth": c.truth}
        report = {"source": c.clip_id, "path": "demo", "kind": "video", "split": self.split,
                  "status": "ok", "clips": 1, "frames": self.num_frames, "fps": self.fps,
                  "size": [self.size, self.size], "audio_sample_rate": self.sample_rate,
                  "audio_channels": 1, "clip_ids": [c.clip_id]}
        return [Clip(c.clip_id, self.split, c.video, c.audio, c.caption, meta)], report


def demo_units(split_counts: dict[str, int], seed: int, size: int = 32, num_frames: int = 17,
               fps: float = 8.0, sample_rate: int = 16000,
               handwritings_per_digit: int | None = None) -> list[DemoUnit]:
    return [DemoUnit(split, i, seed, size, num_frames, fps, sample_rate, handwritings_per_digit)
            for split, n in split_counts.items() for i in range(n)]
