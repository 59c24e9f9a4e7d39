"""Training and held-out audio for SoundStream, from a registry of sources keyed by name.

Sources (config.data.source):
  'demo'         the embedded demo dataset's sound (data_pipelines.demo.sound): random crops
                 of 2.125 s clips, each a tone whose pitch encodes a random digit plus a
                 click at each of 0-3 random bounces (the clips' video is not rendered).
  'audio_folder' audio files (wav/flac/ogg/mp3/...) under config.data.path.
  'video_audio'  audio tracks of the videos (mp4/webm/mkv/mov/...) under config.data.path.

A source is an endless iterator of float32 crops [crop_samples]; `batches` groups them into
[batch, crop_samples]. File sources stream: files are read in a shuffled order per epoch
(each process takes every process_count-th file), cut into non-overlapping crops at a
random offset and mixed in a shuffle buffer of config.data.shuffle_buffer crops, so a few
files are decoded before the first crop comes out; a file that fails to decode is skipped, reported
once, and the rest continue. Files shorter than a crop are zero-padded at the end.

Held-out audio (`heldout_clips`): 'demo' draws from a disjoint seed; file sources read
config.data.eval_path (the first crop of each file, in sorted order).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np

from .audio_io import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, AudioReadError, list_media_files, read_audio

DEMO_FPS = 8.0
DEMO_CLIP_FRAMES = 17
_HELDOUT_SEED_OFFSET = 1_000_003


def demo_clip_audio(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """A random window of one demo clip's sound (data_pipelines.demo.sound): a 17-frame 8 fps
    clip (or longer, to fit num_samples) with a random digit's tone and clicks at 0-3 random
    bounce frames. float32 [num_samples]."""
    from data_pipelines.demo.sound import demo_audio  # imports the demo's bundled materials
    clip_samples = max(num_samples, int(DEMO_CLIP_FRAMES / DEMO_FPS * sample_rate))
    frames = int(clip_samples / sample_rate * DEMO_FPS)
    bounces = sorted(rng.choice(frames, size=rng.integers(0, 4), replace=False).tolist())
    clip = demo_audio(int(rng.integers(10)), bounces, DEMO_FPS, clip_samples, sample_rate, rng)
    start = rng.integers(0, clip_samples - num_samples + 1)
    return clip[start:start + num_samples]


def demo_source(data_config, sample_rate: int, seed: int, process_index: int = 0,
                process_count: int = 1) -> Iterator[np.ndarray]:
    rng = np.random.default_rng([seed, process_index])
    while True:
        yield demo_clip_audio(rng, int(data_config.crop_samples), sample_rate)


def _crops_of(wave: np.ndarray, crop: int, rng: np.random.Generator) -> list[np.ndarray]:
    if wave.size < crop:
        return [np.pad(wave, (0, crop - wave.size))]
    offset = rng.integers(0, wave.size % crop + 1)
    return [wave[offset + i * crop: offset + (i + 1) * crop] for i in range((wave.size - offset) // crop)]


def _file_source(extensions) -> Callable[..., Iterator[np.ndarray]]:
    def source(data_config, sample_rate: int, seed: int, process_index: int = 0,
               process_count: int = 1) -> Iterator[np.ndarray]:
        if not data_config.get("path"):
            raise ValueError(f"config.data.path is empty: source {data_config.source!r} needs a folder "
                             f"of files with extensions {list(extensions)}")
        files = list_media_files(str(data_config.path), extensions)[process_index::process_count]
        if not files:
            raise FileNotFoundError(f"config.data.path={data_config.path!r}: no files for process "
                                    f"{process_index} of {process_count}")
        crop = int(data_config.crop_samples)
        buffer_size = int(data_config.get("shuffle_buffer", 256))
        rng = np.random.default_rng([seed, process_index])
        bad: set[str] = set()
        buffer: list[np.ndarray] = []
        while True:
            for path in rng.permutation(files):
                if path in bad:
                    continue
                try:
                    wave = read_audio(str(path), sample_rate)
                except (AudioReadError, FileNotFoundError) as e:
                    bad.add(path)
                    print(f"[soundstream data] skipping bad file ({len(bad)} so far): {e}", file=sys.stderr)
                    continue
                buffer.extend(_crops_of(wave, crop, rng))
                while len(buffer) >= buffer_size:
                    yield buffer.pop(rng.integers(len(buffer)))
            if len(bad) == len(files):
                raise AudioReadError(f"config.data.path={data_config.path!r}: all {len(files)} files "
                                     "failed to decode (see messages above)")
    return source


AUDIO_SOURCES: dict[str, Callable[..., Iterator[np.ndarray]]] = {
    "demo": demo_source,
    "audio_folder": _file_source(AUDIO_EXTENSIONS),
    "video_audio": _file_source(VIDEO_EXTENSIONS),
}


def make_audio_source(data_config, sample_rate: int, seed: int, process_index: int = 0,
                      process_count: int = 1) -> Iterator[np.ndarray]:
    """Endless float32 crops [crop_samples] from the source named by data_config.source."""
    name = data_config.source
    if name not in AUDIO_SOURCES:
        raise ValueError(f"config.data.source={name!r}: expected one of {sorted(AUDIO_SOURCES)}")
    if int(data_config.crop_samples) <= 0:
        raise ValueError(f"config.data.crop_samples={data_config.crop_samples!r}: expected > 0")
    return AUDIO_SOURCES[name](data_config, sample_rate, seed, process_index, process_count)


def batches(source: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Groups crops into float32 [batch_size, crop_samples]."""
    while True:
        yield np.stack([next(source) for _ in range(batch_size)])


def heldout_clips(data_config, sample_rate: int, num_clips: int, num_samples: int,
                  seed: int = 0) -> np.ndarray:
    """Held-out evaluation audio, float32 [num_clips, num_samples] (see module docstring)."""
    if data_config.source == "demo":
        rng = np.random.default_rng(seed + _HELDOUT_SEED_OFFSET)
        return np.stack([demo_clip_audio(rng, num_samples, sample_rate) for _ in range(num_clips)])
    if data_config.source not in AUDIO_SOURCES:
        raise ValueError(f"config.data.source={data_config.source!r}: expected one of {sorted(AUDIO_SOURCES)}")
    eval_path = data_config.get("eval_path") or None
    if not eval_path:
        raise ValueError(f"config.data.eval_path is empty: source {data_config.source!r} needs a "
                         "folder of held-out files for evaluation")
    extensions = AUDIO_EXTENSIONS if data_config.source == "audio_folder" else VIDEO_EXTENSIONS
    clips = []
    for path in list_media_files(str(eval_path), extensions):
        try:
            wave = read_audio(path, sample_rate, max_seconds=num_samples / sample_rate)
        except AudioReadError as e:
            print(f"[soundstream eval] skipping bad file: {e}", file=sys.stderr)
            continue
        clips.append(np.pad(wave, (0, num_samples - wave.size)))
        if len(clips) == num_clips:
            break
    if not clips:
        raise AudioReadError(f"config.data.eval_path={eval_path!r}: no readable held-out audio")
    return np.stack(clips)
