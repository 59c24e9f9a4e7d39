"""Decode one media file into fixed-geometry clips: 8 fps, 17 frames, resized + centre-cropped.

Why its own module: ingestion, pre-tokenization and the tokenizer trainers must all cut the
same clips from the same file. Video frames are decoded with PyAV (any container/codec
FFmpeg knows) and resampled to the target rate by timestamps, sample-and-hold: the frame
shown at time k / fps is the last source frame whose timestamp is <= that time, so
variable-frame-rate files and any source rate (even below 8 fps) come out right. Only
frames that are picked are converted to RGB and resized, and clips are yielded as soon as
they are complete, so memory stays at one clip whatever the file length.

Audio comes from `vp_tokenizers.soundstream.audio_io.read_audio` (mono mix, resampled to
16 kHz) and is cut to each clip's time span; files without sound give clips with
`audio=None`.

    for clip in decode_video_clips("a.mp4", ClipGeometry(num_frames=17, fps=8, height=32, width=32)):
        clip.video   uint8 [17, 32, 32, 3]
        clip.audio   float32 [34000] or None
        clip.start_seconds
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterator

import av
import cv2
import numpy as np

from vp_tokenizers.soundstream import audio_io


class MediaDecodeError(ValueError):
    """A file cannot be turned into clips; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    """What every clip looks like after decoding."""

    num_frames: int = 17
    fps: float = 8.0
    height: int = 32
    width: int = 32
    sample_rate: int = 16000
    stride_frames: int | None = None  # frames between clip starts; None = num_frames (no overlap)
    max_clips_per_file: int | None = None  # None = every full clip

    def __post_init__(self):
        for name in ("num_frames", "height", "width", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"ClipGeometry.{name} must be a positive int, got {value!r}")
        if not self.fps > 0:
            raise ValueError(f"ClipGeometry.fps must be > 0, got {self.fps!r}")
        if self.stride_frames is not None and self.stride_frames < 1:
            raise ValueError(f"ClipGeometry.stride_frames must be >= 1 or None, got {self.stride_frames!r}")
        if self.max_clips_per_file is not None and self.max_clips_per_file < 1:
            raise ValueError(f"ClipGeometry.max_clips_per_file must be >= 1 or None, "
                             f"got {self.max_clips_per_file!r}")

    @property
    def stride(self) -> int:
        return self.stride_frames or self.num_frames

    @property
    def clip_seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def audio_samples(self) -> int:
        """Samples per clip: 17 frames at 8 fps and 16 kHz -> 34000."""
        return int(round(self.num_frames / self.fps * self.sample_rate))


@dataclasses.dataclass
class DecodedClip:
    index: int  # clip number within its file
    start_seconds: float
    video: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # float32 [samples] or None
    audio_padded_samples: int = 0  # trailing zeros added where the sound track ended early


@dataclasses.dataclass
class SourceInfo:
    """What the source file declared (for the ingest report)."""

    width: int
    height: int
    fps: float | None
    duration_seconds: float | None
    codec: str
    audio_sample_rate: int | None
    audio_channels: int | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resize_and_center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [height, width, 3]: scale to cover, then crop the centre."""
    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, int(round(h * scale))), max(width, int(round(w * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[top:top + height, left:left + width])


def probe(path: str) -> SourceInfo:
    """Reads the stream headers of a video file (raises MediaDecodeError when unreadable)."""
    with _open(path) as container:
        return _source_info(path, container)


def _open(path: str):
    try:
        return av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as e:
        raise MediaDecodeError(f"{path}: unreadable media file ({e})") from None


def _source_info(path: str, container) -> SourceInfo:
    if not container.streams.video:
        raise MediaDecodeError(f"{path}: no video stream (streams: "
                               f"{sorted({s.type for s in container.streams}) or 'none'})")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    audio = container.streams.audio[0] if container.streams.audio else None
    return SourceInfo(
        width=int(stream.codec_context.width), height=int(stream.codec_context.height),
        fps=float(rate) if rate else None, duration_seconds=duration,
        codec=stream.codec_context.name,
        audio_sample_rate=int(audio.rate) if audio is not None else None,
        audio_channels=int(audio.channels) if audio is not None else None)


def _sampled_frames(path: str, container, geometry: ClipGeometry) -> Iterator[tuple[np.ndarray, float]]:
    """Yields (uint8 [H, W, 3] at the target size, source time) at times 0, 1/fps, 2/fps, ..."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fallback_rate = float(stream.average_rate or stream.guessed_rate or geometry.fps)
    step = 1.0 / geometry.fps
    start_time, previous, previous_time, last_gap = None, None, None, 1.0 / fallback_rate
    target, converted = 0, {}
    try:
        for index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else index / fallback_rate
            if start_time is None:
                start_time = time
            time -= start_time
            if previous_time is not None and time > previous_time:
                last_gap = time - previous_time
            while previous is not None and target * step < time - 1e-6:
                yield _convert(previous, geometry, converted), target * step
                target += 1
            previous, previous_time = frame, time
    except av.error.FFmpegError as e:
        raise MediaDecodeError(f"{path}: corrupt video stream ({e})") from None
    if previous is None:
        raise MediaDecodeError(f"{path}: the video stream has no decodable frames")
    while target * step < previous_time + last_gap - 1e-6:
        yield _convert(previous, geometry, converted), target * step
        target += 1


def _convert(frame, geometry: ClipGeometry, cache: dict) -> np.ndarray:
    """RGB, resized and cropped; a frame held for several target times is converted once."""
    key = id(frame)
    if key not in cache:
        cache.clear()
        cache[key] = (frame, resize_and_center_crop(frame.to_ndarray(format="rgb24"),
                                                    geometry.height, geometry.width))
    return cache[key][1]


def _check_not_truncated(path: str, info: SourceInfo, decoded_seconds: float) -> None:
    """A stream that decodes to far less than its declared duration lost its tail."""
    if info.duration_seconds and decoded_seconds < 0.9 * info.duration_seconds - 0.5:
        raise MediaDecodeError(f"{path}: truncated: decoded {decoded_seconds:.2f} s of the "
                               f"declared {info.duration_seconds:.2f} s")


def decode_video_clips(path: str, geometry: ClipGeometry, with_audio: bool = True
                       ) -> tuple[SourceInfo, list[DecodedClip]]:
    """All clips of one video file, or MediaDecodeError (file skipped, nothing half-made).

    Clip k covers target frames [k * stride, k * stride + num_frames). Returns (source info,
    clips). A file shorter than one clip raises MediaDecodeError ("too short") so the report
    says why it produced nothing.
    """
    window: collections.deque = collections.deque(maxlen=geometry.num_frames)
    clips: list[DecodedClip] = []
    decoded_seconds = 0.0
    with _open(path) as container:
        info = _source_info(path, container)
        for index, (frame, time) in enumerate(_sampled_frames(path, container, geometry)):
            window.append(frame)
            decoded_seconds = time + 1.0 / geometry.fps
            first = index - geometry.num_frames + 1
            if first >= 0 and first % geometry.stride == 0:
                clips.append(DecodedClip(len(clips), first / geometry.fps, np.stack(window), None))
                if geometry.max_clips_per_file and len(clips) >= geometry.max_clips_per_file:
                    break
        else:
            _check_not_truncated(path, info, decoded_seconds)
    if not clips:
        raise MediaDecodeError(f"{path}: too short: {decoded_seconds:.2f} s decoded, a clip needs "
                               f"{geometry.clip_seconds:.3f} s ({geometry.num_frames} frames at "
                               f"{geometry.fps:g} fps)")
    if with_audio and info.audio_sample_rate is not None:
        _attach_audio(path, clips, geometry)
    return info, clips


def _attach_audio(path: str, clips: list[DecodedClip], geometry: ClipGeometry) -> None:
    """Cuts each clip's span out of the mono 16 kHz track; a short track is zero-padded."""
    end_seconds = clips[-1].start_seconds + geometry.clip_seconds
    try:
        track = audio_io.read_audio(path, geometry.sample_rate, max_seconds=end_seconds)
    except audio_io.AudioReadError as e:
        raise MediaDecodeError(f"{path}: audio track unreadable ({e})") from None
    n = geometry.audio_samples
    for clip in clips:
        start = int(round(clip.start_seconds * geometry.sample_rate))
        piece = track[start:start + n]
        clip.audio_padded_samples = n - piece.size
        clip.audio = np.pad(piece, (0, n - piece.size)).astype(np.float32)


def decode_image(path: str, geometry: ClipGeometry) -> tuple[SourceInfo, DecodedClip]:
    """One image as a 1-frame clip uint8 [1, height, width, 3] (no audio)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaDecodeError(f"{path}: unreadable image ({e})") from None
    info = SourceInfo(width=rgb.shape[1], height=rgb.shape[0], fps=None, duration_seconds=None,
                      codec="image", audio_sample_rate=None, audio_channels=None)
    frame = resize_and_center_crop(rgb, geometry.height, geometry.width)
    return info, DecodedClip(0, 0.0, frame[None], None)
