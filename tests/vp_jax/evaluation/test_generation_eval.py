"""The generation harness on a real (random-init) LM workdir with tiny real tokenizers.

A random LM cannot draw digits, so the test checks the harness's bookkeeping with real
parts: every task is sampled and scored against real demo clips' truth, the ceiling comes
from the same clips through the tokenizers, and results.json / report.md / clips are written.
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), 'data_pipelines'))
import tiny_tokenizers_for_data  # noqa: E402  (the data tests' tiny real tokenizers)
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from random_lm_workdir import write_random_lm_workdir  # noqa: E402  (a random-weight LM workdir)

from data_pipelines.clip_sources import DemoUnit  # noqa: E402
from vp_jax.evaluation import generation_eval  # noqa: E402



@pytest.fixture(scope='module')
def tokenizers():
    return tiny_tokenizers_for_data.make_tiny_tokenizers()


@pytest.fixture(scope='module')
def lm_workdir(tmp_path_factory, tokenizers):
    fields = ['clip_id', 'caption', 'video_tokens', 'audio_tokens', 'text_tokens']
    return write_random_lm_workdir(tmp_path_factory.mktemp('lm'), tokenizers, fields, step=5,
                                   extra={'mask_fraction': 0.5, 'fps': 8.0})


def test_harness_scores_every_task_beside_its_tokenizer_ceiling(lm_workdir, tokenizers, tmp_path):
    clips = [DemoUnit('test', i, seed=0).produce()[0][0] for i in range(2)]
    settings = generation_eval.HarnessSettings(tasks=('t2v', 'video_to_audio'), num_clips=2, batch_size=2,
                                               classifier_clips=50, feature_network='none', teacher_forced=False)
    out = tmp_path / 'eval'
    tasks = generation_eval.evaluate_lm(lm_workdir, str(out), settings, clips, str(tmp_path / 'cache'),
                                        tokenizers=tokenizers)
    t2v = tasks['t2v']
    assert t2v['digit_correct'].count == 2 and t2v['digit_correct'].ceiling_count == 2
    assert t2v['digit_correct'].target == 0.8
    assert tasks['video_to_audio']['pitch_class_correct'].ceiling_count == 2
    assert tasks['reconstruction']['psnr'].value > 0 and tasks['reconstruction']['si_snr_db'].count == 2
    saved = json.load(open(out / 'results.json'))
    assert saved['info']['step'] == 5 and saved['info']['clips_per_task'] == 2
    assert set(saved['tasks']) == {'t2v', 'video_to_audio', 'reconstruction'}
    assert (out / 'report.md').read_text().count('| t2v |') >= 2
    sidecars = [n for n in os.listdir(out / 'clips') if n.endswith('.json')]
    assert len(sidecars) == 2 * 2 * 2 + 2  # (generated + ceiling) x tasks x clips + reconstructions


def test_harness_settings_from_config_reject_unknown_fields_and_tasks():
    with pytest.raises(ValueError, match='unknown fields'):
        generation_eval.HarnessSettings.from_config({'num_clip': 3})
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        generation_eval.HarnessSettings.from_config({'tasks': ['t2v', 'dance']})
