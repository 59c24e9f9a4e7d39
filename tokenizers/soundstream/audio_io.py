"""Read audio from any file PyAV can open: mono, resampled, float32 in [-1, 1].

Why one reader: the SoundStream trainer, the evaluation command and the data pipeline
(audio tracks of videos) must all see the same samples for the same file, so decoding,
mono mixing and resampling live here once.

    wave = read_audio("clip.mp4", sample_rate=16000)   # float32 [samples]

Works for audio files (wav, flac, ogg, mp3, m4a, ...) and for the audio track of video
containers (mp4, webm, mkv, mov, ...). Channels are resampled by libswresample and then
averaged to mono here (libswresample's own down-mix scales identical channels by 1/sqrt(2),
which would make a stereo file quieter than the same mono file).
Errors name the file: `FileNotFoundError` for a missing path, `AudioReadError` for a file
that is not media, has no audio stream, or decodes to nothing.
"""
from __future__ import annotations

import os
import wave as wave_module
from collections.abc import Sequence

import av
import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")


class AudioReadError(ValueError):
    """A media file could not be turned into audio samples; the message names the file."""


def read_audio(path: str, sample_rate: int = 16000, max_seconds: float | None = None) -> np.ndarray:
    """Decodes the first audio stream of `path` to mono float32 [samples] at `sample_rate`.

    Args:
      path: an audio file or a video file with an audio track.
      sample_rate: output rate in Hz (positive int).
      max_seconds: stop decoding after this much audio (None: whole stream).
    Returns:
      float32 [samples], values nominally in [-1, 1] (not clipped).
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"read_audio({path!r}): sample_rate must be a positive int, got {sample_rate!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"read_audio: audio file {path!r} does not exist")
    if os.path.isdir(path):
        raise AudioReadError(f"read_audio: {path!r} is a directory, expected an audio or video file")
    max_samples = None if max_seconds is None else int(round(max_seconds * sample_rate))
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise AudioReadError(f"read_audio: {path!r} is not a readable media file ({e})") from e
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise AudioReadError(
                f"read_audio: {path!r} has no audio stream (streams found: {', '.join(kinds)})")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().mean(axis=0)
                    chunks.append(chunk)
                    total += chunk.size
                if max_samples is not None and total >= max_samples:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as e:
            raise AudioReadError(f"read_audio: {path!r}: audio stream failed to decode ({e})") from e
    if not chunks or sum(c.size for c in chunks) == 0:
        raise AudioReadError(f"read_audio: {path!r}: audio stream decoded to 0 samples")
    samples = np.concatenate(chunks).astype(np.float32)
    if max_samples is not None:
        samples = samples[:max_samples]
    if not np.all(np.isfinite(samples)):
        raise AudioReadError(f"read_audio: {path!r}: decoded samples contain NaN or Inf")
    return samples


def write_wav(path: str, wave: np.ndarray, sample_rate: int) -> None:
    """Writes mono float [samples] in [-1, 1] as 16-bit PCM WAV (values are clipped)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"write_wav({path!r}): expected mono float [samples], got shape {wave.shape}")
    pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave_module.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())


def list_media_files(folder: str, extensions: Sequence[str]) -> list[str]:
    """Sorted paths under `folder` (recursive) whose lower-cased suffix is in `extensions`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"list_media_files: folder {folder!r} does not exist")
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            if os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(root, name))
    if not found:
        raise FileNotFoundError(
            f"list_media_files: no files with extensions {list(extensions)} under {folder!r}")
    return sorted(found)
