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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))



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


def test_teacher_forced_rows_carry_the_scored_target_tokens_and_examples(tmp_path):
    """A random-weight LM on synthetic shards: each task's loss/accuracy row counts that task's scored
    target tokens (summing to the trainer eval's own output_tokens) and its examples."""
    import jax

    from data_pipelines.testing import DEFAULT_GEOMETRY, write_synthetic_shards
    from vp_jax import trainer
    from vp_jax.checkpointing import Checkpointer
    from vp_jax.config import load_config_file, write_resolved_config
    from vp_jax.evaluation import results

    shards = str(tmp_path / 'shards')
    write_synthetic_shards(shards, num_examples=16, seed=0)  # validation: 4 examples
    config = load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py:runlocal'))
    config.data.shards_dir = shards
    config.data.tasks = {'t2v': 1.0, 't2i': 1.0}
    config.data.image_video_schedule = None
    # A random-weight checkpoint saved the trainer's way (no train step to compile).
    lm = tmp_path / 'lm'
    config = trainer.resolve_for_data(trainer.with_workdir(config, str(lm)), trainer.describe_shards(config.data))
    write_resolved_config(config, str(lm))
    job = trainer.build_job(config, trainer.make_partitioner(config))
    state, _ = job.partitioner.init_sharded(job.init_fn, jax.random.key(0))
    with Checkpointer(str(lm / 'checkpoints'), async_save=False) as checkpointer:
        checkpointer.save(2, state, {'config': config.to_dict()}, force=True)

    tasks = generation_eval.teacher_forced_entries(str(lm))
    assert set(tasks) == {'t2v', 't2i'}
    evaluated = json.loads((lm / 'eval' / 'step_2_validation.json').read_text())['metrics']
    assert sum(tasks[t]['loss'].count for t in tasks) == evaluated['output_tokens'] > 0
    for task, entries in tasks.items():
        loss, accuracy = entries['loss'], entries['accuracy']
        assert loss.examples == accuracy.examples == 4
        assert loss.count == accuracy.count and loss.count % 4 == 0
        assert loss.value == pytest.approx(evaluated[f'task/{task}/loss'])
        assert entries['conditioning_gain'].value == pytest.approx(evaluated[f'task/{task}/conditioning_gain'])
        assert entries['conditioning_gain'].count == loss.count
    # Per example, t2v scores <bov_o> + the clip's video tokens + <eov_o> + <eos>; t2i
    # <bov_o> + the first latent frame's tokens only (vp_jax/tasks.py).
    t, h, w = DEFAULT_GEOMETRY.video_latent_shape
    assert tasks['t2v']['loss'].count == 4 * (t * h * w + 3)
    assert tasks['t2i']['loss'].count == 4 * (h * w + 1)
    # A second call reads what the evaluation wrote for that step instead of evaluating again.
    saved = json.loads((lm / 'eval' / 'step_2_validation.json').read_text())
    saved['metrics']['task/t2v/loss'] = 123.0
    (lm / 'eval' / 'step_2_validation.json').write_text(json.dumps(saved))
    assert generation_eval.teacher_forced_entries(str(lm))['t2v']['loss'].value == 123.0
    report = results.markdown_report(tasks)
    assert f"| t2v | loss | {tasks['t2v']['loss'].value:.3f} | - | - | {tasks['t2v']['loss'].count} tokens / 4 examples |" in report
