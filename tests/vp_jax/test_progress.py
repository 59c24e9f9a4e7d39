"""Progress lines and TensorBoard output of vp_jax.progress."""

import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from vp_jax.progress import Progress, encode_gif, format_duration


def _accumulator(logdir):
    acc = event_accumulator.EventAccumulator(
        logdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0})
    acc.Reload()
    return acc


def test_format_duration_reads_like_a_clock():
    assert format_duration(4.2) == '4s'
    assert format_duration(587) == '9m47s'
    assert format_duration(3725.2) == '1h02m05s'


def test_lines_show_step_scalars_rates_and_eta_every_log_interval():
    stream = io.StringIO()
    progress = Progress(total_steps=20, logdir=None, name='lm', log_every_steps=5, stream=stream)
    for step in range(1, 21):
        progress.update(step, {'loss': 1.0 / step}, items=100)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ['5/20', '10/20', '15/20', '20/20']
    assert lines[1].startswith('[lm] step 10/20 loss=0.1 ')
    assert 'step/s' in lines[1] and 'items/s' in lines[1] and 'ETA' in lines[1]
    assert lines[-1].endswith('ETA 0s')


def test_line_keys_pick_what_the_line_shows_and_items_are_named():
    stream = io.StringIO()
    progress = Progress(total_steps=4, logdir=None, name='lm', log_every_steps=2, stream=stream,
                        items_name='tokens')
    for step in range(1, 5):
        progress.update(step, {'train/loss': 0.5, 'train/task/t2v/loss': 0.25}, items=10,
                        line_keys=['train/loss'])
    assert 'train/loss=0.5' in progress.last_line and 't2v' not in progress.last_line
    assert 'tokens/s' in progress.last_line


def test_scalars_on_skipped_steps_are_never_read():
    class Exploding:
        def __float__(self):
            raise AssertionError('read on a step that does not log')

    progress = Progress(total_steps=10, logdir=None, name='x', log_every_steps=5,
                        stream=io.StringIO())
    progress.update(1, {'loss': Exploding()})
    progress.update(5, {'loss': 0.5})
    assert not progress.should_log(3) and progress.should_log(10)


def test_scalars_land_in_tensorboard_with_rates(tmp_path):
    progress = Progress(total_steps=4, logdir=str(tmp_path), name='lm', log_every_steps=2,
                        stream=io.StringIO())
    for step in range(1, 5):
        progress.update(step, {'train/loss': 2.0 - step * 0.25}, items=64)
    progress.write_scalars(4, {'eval/loss': 1.5})
    progress.close()
    acc = _accumulator(str(tmp_path))
    tags = acc.Tags()['tensors']
    assert {'train/loss', 'perf/steps_per_s', 'perf/items_per_s', 'eval/loss'} <= set(tags)
    losses = {e.step: float(tensor_util.make_ndarray(e.tensor_proto))
              for e in acc.Tensors('train/loss')}
    assert losses == {2: 1.5, 4: 1.0}


def test_videos_are_written_as_animated_gifs(tmp_path):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 255, size=(2, 5, 8, 12, 3), dtype=np.uint8)
    progress = Progress(total_steps=1, logdir=str(tmp_path), name='s', stream=io.StringIO())
    progress.write_videos_as_gif(7, {'samples/t2v': videos}, fps=8)
    progress.close()
    gif_file = tmp_path / 'media' / 'samples_t2v_7_1.gif'
    with Image.open(gif_file) as image:
        assert image.format == 'GIF' and image.n_frames == 5 and image.size == (12, 8)
    acc = _accumulator(str(tmp_path))
    event, = acc.Tensors('samples/t2v')
    width, height, *gifs = event.tensor_proto.string_val
    assert (int(width), int(height), len(gifs)) == (12, 8, 2)
    assert all(g.startswith(b'GIF8') for g in gifs)


def test_audio_is_written_to_tensorboard(tmp_path):
    progress = Progress(total_steps=1, logdir=str(tmp_path), name='a', stream=io.StringIO())
    tone = np.sin(np.linspace(0, 200, 1600, dtype=np.float32))[None]
    progress.write_audio(3, {'samples/audio': tone}, sample_rate=16000)
    progress.close()
    assert 'samples/audio' in _accumulator(str(tmp_path)).Tags()['tensors']


def test_bad_media_shapes_are_rejected_with_the_name(tmp_path):
    progress = Progress(total_steps=1, logdir=str(tmp_path), name='a', stream=io.StringIO())
    with pytest.raises(ValueError, match='samples/v'):
        progress.write_videos_as_gif(0, {'samples/v': np.zeros((5, 8, 8, 3), np.uint8)}, fps=8)
    with pytest.raises(ValueError, match='uint8'):
        encode_gif(np.zeros((2, 4, 4, 3), np.float32), fps=8)
    progress.close()
