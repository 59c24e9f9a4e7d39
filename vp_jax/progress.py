"""Progress lines and TensorBoard logs for every long job (LM and tokenizer trainers, data jobs).

One line every `log_every_steps` steps, on process 0 only, e.g.

    [magvit2] step 120/2000 loss=0.0213 psnr=24.1 3.2 step/s 410 items/s ETA 9m47s

The rates are measured over the steps since the previous line (so compile time of the first
step never pollutes them once the second line is printed) and the ETA extrapolates that
rate. The same scalars, plus `perf/steps_per_s` and `perf/<items_name>_per_s`, go to TensorBoard
(clu metric writers) under `logdir`; images, GIF videos and audio can be written too.

Scalars passed on steps that do not log are ignored, so callers may pass device arrays every
step without forcing a device->host copy: values are read (`float(...)`) only on log steps.
Use `should_log(step)` to skip computing them altogether.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Mapping, Sequence

import jax
import numpy as np


def format_duration(seconds: float) -> str:
    """3725.2 -> '1h02m05s'; 587 -> '9m47s'; 4.2 -> '4s'."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours}h{minutes:02d}m{secs:02d}s'
    if minutes:
        return f'{minutes}m{secs:02d}s'
    return f'{secs}s'


def _format_value(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f'{value:.4g}'
    return f'{value:.3e}'


def _format_rate(value: float) -> str:
    if value >= 100:
        return f'{value:,.0f}'
    return f'{value:.3g}'


def encode_gif(video: np.ndarray, fps: int) -> bytes:
    """uint8 [time, height, width, channels] (channels 1 or 3) -> animated GIF bytes (loops)."""
    from PIL import Image  # Pillow; imported lazily, only media logging needs it.
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] not in (1, 3) or video.dtype != np.uint8:
        raise ValueError(f'encode_gif: expected uint8 [time, height, width, 1|3], '
                         f'got {video.dtype} {video.shape}.')
    frames = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in video]
    buffer = io.BytesIO()
    frames[0].save(buffer, format='GIF', save_all=True, append_images=frames[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
    return buffer.getvalue()


class Progress:
    """Prints progress lines and writes TensorBoard summaries; only process 0 outputs anything.

    Args:
      total_steps: the step count the job ends at (for `step x/total` and the ETA).
      logdir: TensorBoard directory, or None for printing only.
      name: shown in brackets at the start of each line.
      log_every_steps: print/write every this many steps (and always at `total_steps`).
      first_step: the step the job (re)starts from, so a resumed run's ETA is right.
      stream: where lines go (default stdout).
      items_name: what `items` counts, shown as '<rate> <items_name>/s' (e.g. 'tokens').
    """

    def __init__(self, total_steps: int, logdir: str | None, name: str,
                 log_every_steps: int = 10, first_step: int = 0, stream=None,
                 items_name: str = 'items'):
        if log_every_steps < 1:
            raise ValueError(f'Progress: log_every_steps={log_every_steps}, expected >= 1.')
        self.total_steps = int(total_steps)
        self.name = name
        self.items_name = items_name
        self.log_every_steps = int(log_every_steps)
        self.logdir = logdir
        self._stream = stream or sys.stdout
        self._is_lead = jax.process_index() == 0
        self._writer = None
        if logdir is not None and self._is_lead:
            from clu import metric_writers  # Imports TensorFlow; only when logging to disk.
            os.makedirs(logdir, exist_ok=True)
            self._writer = metric_writers.AsyncWriter(metric_writers.SummaryWriter(logdir))
        self._window_start_step = int(first_step)
        self._window_start_time = None
        self._window_items = 0
        self.last_line = ''

    def should_log(self, step: int) -> bool:
        return step % self.log_every_steps == 0 or step == self.total_steps

    def update(self, step: int, scalars: Mapping[str, float], items: int | None = None,
               line_keys: Sequence[str] | None = None) -> None:
        """Record that `step` finished; `items` is what it processed (tokens, clips, ...).

        All `scalars` go to TensorBoard; `line_keys` picks those shown on the line (default all).
        """
        now = time.perf_counter()
        if self._window_start_time is None:
            # The first call marks time zero: the steps before it (compilation, restore) are
            # not counted in the rates.
            self._window_start_time = now
            self._window_start_step = step
            self._window_items = 0
            if not self.should_log(step):
                return
        else:
            self._window_items += items or 0
        if not self.should_log(step):
            return
        values = {k: float(v) for k, v in scalars.items()}
        steps_done = step - self._window_start_step
        elapsed = now - self._window_start_time
        parts = [f'[{self.name}] step {step}/{self.total_steps}']
        shown = values if line_keys is None else {k: values[k] for k in line_keys if k in values}
        parts += [f'{k}={_format_value(v)}' for k, v in shown.items()]
        if steps_done > 0 and elapsed > 0:
            steps_per_s = steps_done / elapsed
            values['perf/steps_per_s'] = steps_per_s
            parts.append(f'{_format_rate(steps_per_s)} step/s')
            if items is not None:
                items_per_s = self._window_items / elapsed
                values[f'perf/{self.items_name}_per_s'] = items_per_s
                parts.append(f'{_format_rate(items_per_s)} {self.items_name}/s')
            parts.append(f'ETA {format_duration((self.total_steps - step) / steps_per_s)}')
        self.last_line = ' '.join(parts)
        if self._is_lead:
            print(self.last_line, file=self._stream, flush=True)
            if self._writer is not None:
                self._writer.write_scalars(step, values)
        self._window_start_step, self._window_start_time, self._window_items = step, now, 0

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Write scalars to TensorBoard now (e.g. eval results), without a progress line."""
        if self._writer is not None:
            self._writer.write_scalars(step, {k: float(v) for k, v in scalars.items()})

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """images: name -> uint8 [N, height, width, channels]."""
        if self._writer is not None:
            self._writer.write_images(step, {k: np.asarray(v) for k, v in images.items()})

    def write_videos_as_gif(self, step: int, videos: Mapping[str, np.ndarray], fps: int) -> None:
        """videos: name -> uint8 [N, time, height, width, channels]; shown animated in TensorBoard.

        Each video is also saved as `<logdir>/media/<name>_<step>_<i>.gif` for direct viewing.
        """
        if self._writer is None:
            return
        import tensorflow as tf
        from tensorboard.plugins.image import metadata as image_metadata
        media_dir = os.path.join(self.logdir, 'media')
        os.makedirs(media_dir, exist_ok=True)
        summaries, metadata = {}, {}
        for name, batch in videos.items():
            batch = np.asarray(batch)
            if batch.ndim != 5:
                raise ValueError(f'write_videos_as_gif: {name!r} must be uint8 '
                                 f'[N, time, height, width, channels], got shape {batch.shape}.')
            gifs = [encode_gif(video, fps) for video in batch]
            for i, gif in enumerate(gifs):
                path = os.path.join(media_dir, f'{name.replace("/", "_")}_{step}_{i}.gif')
                with open(path, 'wb') as f:
                    f.write(gif)
            # The image plugin's tensor layout: [width, height, encoded image, ...]; TensorBoard
            # displays any browser-readable encoding, so GIFs animate.
            height, width = batch.shape[2:4]
            summaries[name] = tf.constant([str(width).encode(), str(height).encode(), *gifs])
            metadata[name] = image_metadata.create_summary_metadata(
                display_name=name, description=f'{len(gifs)} GIF(s) at {fps} fps')
        self._writer.write_summaries(step, summaries, metadata)

    def write_audio(self, step: int, audios: Mapping[str, np.ndarray], sample_rate: int) -> None:
        """audios: name -> float [N, samples] in [-1, 1]."""
        if self._writer is None:
            return
        batches = {}
        for name, batch in audios.items():
            batch = np.asarray(batch, np.float32)
            if batch.ndim != 2:
                raise ValueError(f'write_audio: {name!r} must be float [N, samples], '
                                 f'got shape {batch.shape}.')
            batches[name] = np.clip(batch, -1.0, 1.0)[..., None]
        self._writer.write_audios(step, batches, sample_rate=sample_rate)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
