"""Media files in and out: mp4 (H.264 + AAC), gif, png, wav, contact sheets.

Every generated or decoded clip in the project passes through here, so the conventions live
in one place:
  video  uint8 [time, height, width, 3] RGB
  image  uint8 [height, width, 3] RGB
  audio  float32 [samples] mono in [-1, 1]

H.264 with yuv420p chroma needs even frame sizes; odd sizes are padded by repeating the last
row/column (the decoded file is then one pixel larger, which `read_video` reports honestly).
AAC is written at the clip's own sample rate. Readers decode with PyAV, so any container or
codec FFmpeg knows is accepted as input.
"""
from __future__ import annotations

import os
import wave
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw


def _check_video(video: np.ndarray, what: str = "video") -> np.ndarray:
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or 0 in video.shape:
        raise ValueError(f"{what} must be uint8 [time, height, width, 3] with no empty axis; "
                         f"got dtype {video.dtype} shape {video.shape}")
    return video


def _check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{what} must be float [samples] mono with at least one sample; "
                         f"got dtype {audio.dtype} shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{what} contains NaN or Inf samples")
    return np.clip(audio.astype(np.float32), -1.0, 1.0)


def _check_rate(value, name: str) -> None:
    if not value or value <= 0:
        raise ValueError(f"{name} must be positive; got {value!r}")


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def pad_to_even(video: np.ndarray) -> np.ndarray:
    """Repeats the last row/column so height and width are even ([T,H,W,3] -> [T,H',W',3])."""
    video = _check_video(video)
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return video


def write_mp4(path: str, video: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sample_rate: int = 16000, crf: int = 18) -> None:
    """Writes an H.264 mp4 (yuv420p, plays everywhere) with optional AAC mono audio.

    video: uint8 [T, H, W, 3]; audio: float32 [samples] in [-1, 1] or None.
    """
    video = pad_to_even(video)
    _check_rate(fps, "fps")
    if audio is not None:
        audio = _check_audio(audio)
        _check_rate(sample_rate, "sample_rate")
    _make_parent(path)
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = video.shape[1], video.shape[2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=int(sample_rate))
            audio_stream.layout = "mono"
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            frame = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
            frame.sample_rate = int(sample_rate)
            frame.pts = 0
            for packet in audio_stream.encode(frame):
                container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)


def write_gif(path: str, video: np.ndarray, fps: float) -> None:
    """Writes an endlessly looping animated gif (video: uint8 [T, H, W, 3])."""
    video = _check_video(video)
    _check_rate(fps, "fps")
    _make_parent(path)
    frames = [Image.fromarray(frame) for frame in video]
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=max(1, round(1000.0 / fps)), optimize=False)


def write_png(path: str, image: np.ndarray) -> None:
    """Writes an RGB png (image: uint8 [H, W, 3])."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [height, width, 3]; got dtype {image.dtype} "
                         f"shape {image.shape}")
    _make_parent(path)
    Image.fromarray(image).save(path)


def write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Writes 16-bit PCM mono wav (audio: float32 [samples] in [-1, 1])."""
    audio = _check_audio(audio)
    _check_rate(sample_rate, "sample_rate")
    _make_parent(path)
    pcm = np.round(audio * 32767.0).astype("<i2")
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())


def contact_sheet(videos: np.ndarray, frames_per_row: int = 9, labels=None,
                  gap: int = 2) -> np.ndarray:
    """Tiles clips into one image: one band per clip, `frames_per_row` frames across.

    videos: uint8 [N, T, H, W, 3]. A clip with more frames than `frames_per_row` is shown at
    evenly spaced frames (first and last included). labels: optional N strings drawn in a strip
    above each band. Returns uint8 [H', W', 3] on a white background.
    """
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"videos must be uint8 [N, T, H, W, 3]; got shape {videos.shape}")
    for i, video in enumerate(videos):
        _check_video(video, what=f"videos[{i}]")
    if frames_per_row < 1:
        raise ValueError(f"frames_per_row must be >= 1; got {frames_per_row}")
    num, t, h, w, _ = videos.shape
    if labels is not None and len(labels) != num:
        raise ValueError(f"labels has {len(labels)} entries for {num} videos")
    cols = min(frames_per_row, t)
    frame_ids = np.round(np.linspace(0, t - 1, cols)).astype(int)
    label_h = 12 if labels is not None else 0
    band_h = label_h + h
    sheet = np.full((num * band_h + (num + 1) * gap, cols * w + (cols + 1) * gap, 3), 255,
                    np.uint8)
    for i in range(num):
        top = gap + i * (band_h + gap) + label_h
        for j, f in enumerate(frame_ids):
            left = gap + j * (w + gap)
            sheet[top:top + h, left:left + w] = videos[i, f]
    if labels is not None:
        canvas = Image.fromarray(sheet)
        draw = ImageDraw.Draw(canvas)
        for i, label in enumerate(labels):
            draw.text((gap, gap + i * (band_h + gap)), str(label), fill=(0, 0, 0))
        sheet = np.asarray(canvas)
    return sheet


def _open_for_reading(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"media file not found: {path}")
    try:
        return av.open(path)
    except av.FFmpegError as e:
        raise ValueError(f"cannot decode media file {path}: {e}") from e


def read_video(path: str) -> tuple[np.ndarray, float]:
    """Decodes every frame of the first video stream: (uint8 [T, H, W, 3], fps)."""
    with _open_for_reading(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        try:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except av.FFmpegError as e:
            raise ValueError(f"corrupt video stream in {path}: {e}") from e
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not frames:
        raise ValueError(f"{path}: the video stream has no decodable frames")
    return np.stack(frames), float(rate) if rate else 0.0


def read_image(path: str) -> np.ndarray:
    """Reads any image Pillow knows (or the first frame of a video) as uint8 [H, W, 3]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError):
        return read_video(path)[0][0]


def read_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
    """Decodes the first audio stream (wav, mp4, ...) to float32 mono [samples] at `sample_rate`.

    One reader serves the whole project: the audio tokenizer's (channel mean, resampled).
    """
    from vp_tokenizers.soundstream import audio_io

    return audio_io.read_audio(path, int(sample_rate))
