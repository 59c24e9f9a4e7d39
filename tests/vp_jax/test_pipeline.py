"""The demo job's stage chain: cached stages, invalidation by config field, resume, end to end.

Fast tests run the cheap real stages (demo clip store, caption tokenizer) on a handful of
clips; the slow test runs `python -m vp_jax.main --config=experiments/t2v_base.py:quick`.
"""
import json
import os
import subprocess
import sys

import pytest

from vp_jax import pipeline, stages
from vp_jax.config import ConfigError, load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config():
    config = load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py'), 'quick')
    config.demo.num_clips = dict(train=4, validation=1, test=1)
    config.demo.clips_per_shard = 2
    config.demo.caption_tokenizer.vocab_size = 32
    return config


def _run(config, workdir, names, logs):
    made = pipeline.make_stages(config, str(workdir))
    return [stages.run_stage(made[name], str(workdir), log=logs.append) for name in names]


def _mtimes(directory):
    return {name: os.path.getmtime(os.path.join(directory, name)) for name in os.listdir(directory)
            if name.endswith('.tfrecord') or name.endswith('.model')}


def test_second_run_skips_valid_stages_without_touching_their_outputs(tmp_path):
    config, logs = _tiny_config(), []
    demo_dir, caption_dir = _run(config, tmp_path, ['demo', 'caption_tokenizer'], logs)
    before = {**_mtimes(demo_dir), **_mtimes(caption_dir)}
    _run(config, tmp_path, ['demo', 'caption_tokenizer'], logs)
    assert sum('cached' in line for line in logs) == 2
    assert {**_mtimes(demo_dir), **_mtimes(caption_dir)} == before
    assert [c.split for c in pipeline.read_demo_clips(demo_dir, 'train')] == ['train'] * 4
    assert os.path.exists(os.path.join(caption_dir, pipeline.CAPTION_MODEL))


def test_a_changed_demo_field_rebuilds_the_demo_and_the_stages_that_read_it(tmp_path):
    config, logs = _tiny_config(), []
    demo_dir, _ = _run(config, tmp_path, ['demo', 'caption_tokenizer'], logs)
    first_ids = [c.clip_id for c in pipeline.read_demo_clips(demo_dir, 'train')]
    config.demo.seed = 1
    _run(config, tmp_path, ['demo', 'caption_tokenizer'], logs)
    assert sum('inputs changed' in line for line in logs) == 2
    second_ids = [c.clip_id for c in pipeline.read_demo_clips(demo_dir, 'train')]
    assert second_ids != first_ids and all('-s1-' in clip_id for clip_id in second_ids)


def test_fingerprints_change_only_downstream_of_the_changed_field():
    base = {k: s.fingerprint for k, s in pipeline.make_stages(_tiny_config(), '/unused').items()}
    config = _tiny_config()
    config.demo.video_tokenizer.train.num_steps += 1
    changed = {k for k, s in pipeline.make_stages(config, '/unused').items() if s.fingerprint != base[k]}
    assert changed == {'video_tokenizer', 'shards', 'lm', 'eval', 'samples'}
    config = _tiny_config()
    config.train.num_steps += 1
    changed = {k for k, s in pipeline.make_stages(config, '/unused').items() if s.fingerprint != base[k]}
    assert changed == {'lm', 'eval', 'samples'}
    config = _tiny_config()
    config.demo.harness.num_clips += 1
    changed = {k for k, s in pipeline.make_stages(config, '/unused').items() if s.fingerprint != base[k]}
    assert changed == {'eval'}


def test_an_interrupted_demo_stage_resumes_from_its_finished_shards(tmp_path):
    config, logs = _tiny_config(), []
    real = pipeline.make_stages(config, str(tmp_path))['demo']

    def killed_after_writing(directory):
        real.run(directory)
        raise KeyboardInterrupt  # killed before the stage could record that it finished

    with pytest.raises(KeyboardInterrupt):
        stages.run_stage(stages.Stage('demo', real.inputs, killed_after_writing, real.is_valid), str(tmp_path),
                         log=logs.append)
    directory = os.path.join(tmp_path, 'demo')
    before = _mtimes(directory)
    stages.run_stage(real, str(tmp_path), log=logs.append)
    assert any('resuming' in line for line in logs)
    assert _mtimes(directory) == before  # every shard was done: nothing re-generated
    assert os.path.exists(os.path.join(directory, stages.DONE_FILE))


def test_demo_config_errors_name_the_field_and_both_values():
    config = _tiny_config()
    config.demo.video_tokenizer.data.num_frames = 9
    config.demo.num_clips = dict(train=4, validation=0)
    config.demo.handwritings_per_digit = -2
    with pytest.raises(ConfigError) as error:
        pipeline.check_demo_config(config)
    message = str(error.value)
    assert 'config.demo.video_tokenizer.data.num_frames=9' in message and 'num_frames=17' in message
    assert 'config.demo.handwritings_per_digit=-2' in message
    assert 'config.demo.num_clips.validation=0' in message
    assert "no 'test' split" in message


def test_evaluating_an_untrained_workdir_names_the_stages_to_build_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs the stages .*'lm'"):
        pipeline.run(_tiny_config(), str(tmp_path), until='eval', only=True)
    assert not os.path.exists(tmp_path / 'eval')


def test_only_configs_with_a_demo_section_and_no_shards_build_the_demo():
    config = _tiny_config()
    assert pipeline.uses_demo(config)
    config.data.shards_dir = '/data/shards'
    assert not pipeline.uses_demo(config)


@pytest.mark.slow
@pytest.mark.ci  # issue 7: the quick job end to end stays in .ci/run while it fits CI's budget
def test_quick_variant_runs_the_whole_job_then_a_second_run_reuses_every_stage(tmp_path):
    command = [sys.executable, '-m', 'vp_jax.main', '--config=experiments/t2v_base.py:quick',
               f'--workdir={tmp_path}']
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f'workdir={tmp_path}' in first.stdout
    results = json.load(open(tmp_path / 'eval' / 'results.json'))
    assert {'t2v', 'i2v', 'video_to_audio', 'reconstruction'} <= set(results['tasks'])
    assert results['tasks']['t2v']['digit_correct']['ceiling'] is not None
    assert results['tasks']['t2v']['loss']['value'] > 0
    # Teacher-forced rows count their scored target tokens and examples (not clips).
    assert results['tasks']['t2v']['loss']['count'] > results['tasks']['t2v']['loss']['examples'] > 0
    assert os.path.exists(tmp_path / 'eval' / 'report.md')
    samples = tmp_path / 'samples' / 't2v_video_to_audio'
    assert any(name.endswith('.mp4') for name in os.listdir(samples))
    assert any(name.endswith('.wav') for name in os.listdir(samples))
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count('cached (fingerprint') == len(pipeline.STAGE_NAMES)
