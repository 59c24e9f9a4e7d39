"""Generation end to end: a real (random-init) LM workdir, tiny real tokenizers, media files out.

The LM workdir comes from random_lm_workdir (the trainer's own pieces, random weights); the tokenizers are the data tests' tiny random
MAGVIT-v2 / SoundStream / word tokenizer (tests/data_pipelines/tiny_tokenizers_for_data.py),
handed to the CLI as a --tokenizers factory.
"""
import json
import os
import sys

import jax
import numpy as np
import pytest
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data_pipelines'))
import tiny_tokenizers_for_data  # noqa: E402  (the data tests' tiny real tokenizers)
from random_lm_workdir import write_random_lm_workdir  # noqa: E402

from vp_jax import generate, media  # noqa: E402
from vp_jax.generation import Generator, clip_geometry_for  # noqa: E402
from vp_jax.sampling import Sampler, SamplingOptions  # noqa: E402

FACTORY = 'tiny_tokenizers_for_data:make_tiny_tokenizers'
PROMPT = 'the digit three moves left quickly over the photo'


@pytest.fixture(scope='module')
def tokenizers():
    return tiny_tokenizers_for_data.make_tiny_tokenizers()


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tokenizers):
    fields = ['clip_id', 'caption', 'video_tokens', 'inpaint_tokens', 'outpaint_tokens',
              'structure_tokens', 'audio_tokens', 'text_tokens']
    return write_random_lm_workdir(tmp_path_factory.mktemp('lm'), tokenizers, fields, step=3,
                                   extra={'mask_fraction': 0.5})


@pytest.fixture(scope='module')
def generator(workdir, tokenizers):
    lm = generate.load_lm(workdir)
    clip = clip_geometry_for(lm.dataset.geometry, tokenizers)
    return Generator(Sampler(lm.model, lm.partitioner), lm.params, lm.dataset.vocab, lm.dataset.geometry,
                     tokenizers, clip)


def _run_cli(args):
    generate.define_flags()
    flags.FLAGS(['generate'] + args)
    try:
        generate.main([])
    finally:
        flags.FLAGS.unparse_flags()


def _clip(num=1, seed=0):
    rng = np.random.default_rng(seed)
    video = np.full((num, 17, 32, 32, 3), 30, np.uint8)
    for t in range(17):
        video[:, t, 8:20, 2 + t:14 + t] = rng.integers(150, 255, size=3, dtype=np.uint8)
    return video


def test_cli_t2v_writes_h264_mp4_gif_contact_sheet_and_summary(workdir, tmp_path):
    out = tmp_path / 'out'
    _run_cli([f'--workdir={workdir}', '--task=t2v', f'--prompt={PROMPT}', f'--out={out}', '--num_samples=2',
              f'--tokenizers={FACTORY}', '--temperature=0.8', '--top_k=20', '--guidance_scale=2.0', '--seed=3'])
    video, fps = media.read_video(str(out / 't2v_00.mp4'))
    assert video.shape == (17, 32, 32, 3) and fps == 8.0
    assert media.read_video(str(out / 't2v_01.gif'))[0].shape == (17, 32, 32, 3)
    assert media.read_image(str(out / 'contact_sheet.png')).ndim == 3
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['chain'] == ['t2v'] and summary['options']['guidance_scale'] == 2.0
    tokens = np.load(out / 'tokens.npz')['video']
    assert tokens.shape == (2, 5, 4, 4) and tokens.min() >= 0 and tokens.max() < 2 ** 6


def test_cli_chains_image_to_video_then_stylization_and_adds_sound(workdir, tmp_path):
    image = tmp_path / 'start.png'
    media.write_png(str(image), _clip()[0, 0])
    out = tmp_path / 'out'
    _run_cli([f'--workdir={workdir}', '--task=i2v,stylization', f'--image={image}', f'--prompt={PROMPT}',
              f'--out={out}', f'--tokenizers={FACTORY}', '--add_audio'])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['chain'] == ['i2v', 'stylization', 'video_to_audio']
    assert [t['task'] for t in summary['timings']] == summary['chain']
    name = 'i2v_stylization_video_to_audio_00'
    assert media.read_audio(str(out / f'{name}.mp4')).size > 16000  # AAC track muxed in
    assert media.read_audio(str(out / f'{name}.wav')).size == 34000


def test_cli_refuses_a_task_without_its_input(workdir, tmp_path):
    with pytest.raises(ValueError, match=r"task 'i2v' needs \['images'\]"):
        _run_cli([f'--workdir={workdir}', '--task=i2v', f'--out={tmp_path}', f'--tokenizers={FACTORY}'])


def test_long_video_adds_eight_frames_per_round_and_reports_seams(generator):
    rounds = 2
    result = generator.long_video(_clip(2), rounds, jax.random.key(0), SamplingOptions(temperature=0.0))
    assert result.video.shape == (2, 17 + rounds * 8, 32, 32, 3)
    np.testing.assert_array_equal(result.video[:, :17], _clip(2))  # the start clip is kept as given
    for key in ('seam_step', 'within_step', 'seam_ratio', 'head_reconstruction_step'):
        assert np.isfinite(result.metrics[key]), key
    assert result.tokens['video_tail'].shape == (2, rounds, 2, 4, 4)


@pytest.mark.parametrize('task', ['i2v', 'inpainting', 'audio_to_video', 'av_continuation'])
def test_task_recipes_return_clips_at_the_clip_geometry(generator, task):
    rng, options = jax.random.key(1), SamplingOptions(top_k=16)
    videos = _clip(2)
    audio = (0.3 * np.sin(np.arange(34000) * 0.05)).astype(np.float32)[None].repeat(2, 0)
    if task == 'i2v':
        result = generator.image_to_video(videos[:, 0], rng, options)
    elif task == 'inpainting':
        result = generator.inpainting(videos, rng, options)
        assert result.conditioning.shape == videos.shape
    elif task == 'audio_to_video':
        result = generator.audio_to_video(audio, rng, options)
        np.testing.assert_array_equal(result.audio, audio)
    else:
        result = generator.av_continuation(videos, audio, rng, options)
        assert result.audio.shape == (2, 34000)
    assert result.video.shape == videos.shape and result.video.dtype == np.uint8


@pytest.mark.slow
@pytest.mark.parametrize('task', ['unconditional', 't2i', 'continuation', 'outpainting', 'stylization',
                                  'video_to_audio'])
def test_remaining_task_recipes_run(generator, task):
    rng, options = jax.random.key(2), SamplingOptions()
    videos = _clip(2)
    if task == 'unconditional':
        result = generator.unconditional(2, rng, options)
    elif task == 't2i':
        result = generator.text_to_image([PROMPT, PROMPT], rng, options)
        assert result.video.shape == (2, 1, 32, 32, 3)
        return
    elif task == 'stylization':
        result = generator.stylization([PROMPT, PROMPT], videos, rng, options)
    else:
        result = getattr(generator, task)(videos, rng, options)
    assert result.video.shape == videos.shape


def test_i2v_keeps_the_tokens_of_the_given_first_frame(generator):
    image = _clip()[:, 0]
    result = generator.image_to_video(image, jax.random.key(0), SamplingOptions(temperature=0.0))
    np.testing.assert_array_equal(result.tokens['video'][:, :1], generator.encode_video(image[:, None]))
    np.testing.assert_array_equal(result.tokens['video'][:, 1:], result.tokens['after_first_frame'])


def test_recipes_reject_clips_of_the_wrong_geometry(generator):
    with pytest.raises(ValueError, match='uint8 \\[batch, 17, 32, 32, 3\\]'):
        generator.continuation(np.zeros((1, 9, 32, 32, 3), np.uint8), jax.random.key(0), SamplingOptions())
    with pytest.raises(ValueError, match='trained on'):
        generator.audio_to_video(np.zeros((1, 8000), np.float32), jax.random.key(0), SamplingOptions())
