"""Loading, validating, resolving and saving job configs (vp_jax.config, experiments/*.py)."""

import os
import subprocess
import sys

import pytest

from data_pipelines.testing import DEFAULT_GEOMETRY, DEFAULT_VOCAB
from vp_jax.config import (ConfigError, apply_overrides, config_errors, default_workdir,
                           load_config_file, prefix_visual_bit_flip_rates, read_resolved_config,
                           resolve_config, task_loss_multipliers, validate_config, write_resolved_config)
from vp_jax.tasks import NUM_TASKS, TASKS_BY_NAME

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T2V_BASE = os.path.join(REPO, 'experiments', 't2v_base.py')


def _runlocal():
    return load_config_file(T2V_BASE + ':runlocal')


@pytest.mark.parametrize('path, num_devices', [
    ('t2v_base.py', 1), ('t2v_base.py:runlocal', 1), ('t2v_base.py:accel', 8),
    ('lm_1b.py', 256), ('lm_1b.py:tensor4', 256), ('lm_8b.py', 256), ('lm_8b.py:fsdp', 128)])
def test_every_experiment_variant_is_valid(path, num_devices):
    config = load_config_file(os.path.join(REPO, 'experiments', path))
    assert config_errors(config, num_devices, check_shards=False) == []


def test_config_docstrings_start_with_the_command_that_runs_them():
    for name in ('t2v_base.py', 'lm_1b.py', 'lm_8b.py'):
        with open(os.path.join(REPO, 'experiments', name)) as f:
            first_line = f.read().split('\n', 1)[0]
        assert 'python -m vp_jax.main --config=experiments/' + name in first_line


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        load_config_file(T2V_BASE + ':huge')


def test_batch_must_divide_into_data_shards_and_microbatches():
    config = _runlocal()
    config.train.batch_size = 12
    config.train.microbatches = 1
    errors = config_errors(config, num_devices=8, check_shards=False)
    assert any('config.train.batch_size=12' in e and 'not divisible by the 8 batch shards' in e for e in errors)
    config.train.microbatches = 5
    errors = config_errors(config, num_devices=1, check_shards=False)
    assert any('batch_size=12 is not divisible by config.train.microbatches=5' in e for e in errors)


def test_mesh_that_does_not_match_the_devices_is_an_error():
    config = _runlocal()
    config.mesh.update(data=3, fsdp=1, tensor=1)
    errors = config_errors(config, num_devices=8, check_shards=False)
    assert any(e.startswith('config.mesh:') and 'expected the device count 8' in e for e in errors)
    config.mesh.update(data=-1, fsdp=-1)
    assert any('at most one -1' in e for e in config_errors(config, 8, check_shards=False))


def test_unknown_task_names_and_bad_rates_are_named():
    config = _runlocal()
    config.data.tasks = {'t2v': 1.0, 'text_to_song': 0.5, 'i2v': -1.0}
    config.train.task_loss_multipliers = {'t2vv': 2.0}
    config.train.prefix_visual_bit_flip_tasks = 'video_to_audio, v2a'
    errors = '\n'.join(config_errors(config, 1, check_shards=False))
    assert "config.data.tasks: unknown task 'text_to_song'" in errors
    assert "config.data.tasks['i2v']=-1.0: expected a rate >= 0" in errors
    assert "config.train.task_loss_multipliers: unknown task 't2vv'" in errors
    assert "config.train.prefix_visual_bit_flip_tasks: unknown task 'v2a'" in errors


def test_bad_optimizer_model_and_train_fields_are_all_reported_at_once():
    config = _runlocal()
    config.optimizer.schedule = 'linear'
    config.model.num_heads = 3
    config.model.num_kv_heads = 2
    config.train.num_steps = 0
    config.eval.max_batches_per_task = 0
    with pytest.raises(ConfigError) as info:
        validate_config(config, 1, check_shards=False)
    joined = str(info.value)
    assert "config.optimizer.schedule='linear'" in joined
    assert 'config.model.num_heads=3 must be a multiple of config.model.num_kv_heads=2' in joined
    assert 'config.train.num_steps=0: expected a positive integer' in joined
    assert 'config.eval.max_batches_per_task=0: expected a positive integer' in joined
    assert len(info.value.errors) >= 4


def test_missing_shards_are_reported_when_checked(tmp_path):
    config = _runlocal()
    config.data.shards_dir = str(tmp_path / 'nowhere')
    errors = config_errors(config, 1, check_shards=True)
    assert any('data.shards_dir' in e and 'nowhere' in e for e in errors)


def test_resolution_takes_vocab_size_and_text_width_from_the_data():
    config = _runlocal()
    resolved = resolve_config(config, DEFAULT_VOCAB, DEFAULT_GEOMETRY, 0, {'video_len30': 30})
    assert resolved.model.vocab_size == DEFAULT_VOCAB.padded_size
    assert resolved.model.text_embedding_dim == 0
    assert config.model.vocab_size == -1  # the original is untouched


def test_resolution_takes_the_visual_grid_and_visual_ids_from_the_data():
    config = _runlocal()
    config.model.visual_grid = (-1, -1)
    assert not config_errors(config, 1, check_shards=False)
    resolved = resolve_config(config, DEFAULT_VOCAB, DEFAULT_GEOMETRY, 0, {'video_len30': 30})
    assert tuple(resolved.model.visual_grid) == DEFAULT_GEOMETRY.video_latent_shape[1:]
    assert tuple(resolved.model.visual_range) == DEFAULT_VOCAB.visual_range
    config.model.visual_grid = (4, 0)
    assert any('visual_grid=(4, 0)' in e for e in config_errors(config, 1, check_shards=False))
    config.model.update(visual_grid=(0, 0), visual_bit_embedding=True)  # the bit embedding reads the ids too
    assert not config_errors(config, 1, check_shards=False)
    resolved = resolve_config(config, DEFAULT_VOCAB, DEFAULT_GEOMETRY, 0, {'video_len30': 30})
    assert tuple(resolved.model.visual_range) == DEFAULT_VOCAB.visual_range


def test_resolution_rejects_sequences_longer_than_the_positions():
    config = _runlocal()
    config.data.tasks = {'t2v': 1.0}
    config.model.max_length = 16
    with pytest.raises(ConfigError, match=r"max_length=16: task 't2v' needs \d+ positions"):
        resolve_config(config, DEFAULT_VOCAB, DEFAULT_GEOMETRY, 0, {'video_len30': 30})
    config.model.max_length = 64
    config.model.vocab_size = 10
    config.model.text_embedding_dim = 8
    with pytest.raises(ConfigError) as info:
        resolve_config(config, DEFAULT_VOCAB, DEFAULT_GEOMETRY, 0, {'video_len30': 30})
    assert 'vocab_size=10 is smaller than the data vocabulary' in str(info.value)
    assert 'text_embedding_dim=8 but the shards carry text embeddings of width 0' in str(info.value)


def test_overrides_reach_nested_fields_and_reject_unknown_ones():
    config = _runlocal()
    apply_overrides(config, {'train.num_steps': 7, 'model.num_layers': 1})
    assert (config.train.num_steps, config.model.num_layers) == (7, 1)
    with pytest.raises(KeyError, match="no field 'num_stepz'"):
        apply_overrides(config, {'train.num_stepz': 1})


def test_task_loss_multipliers_are_indexed_by_task_id():
    config = _runlocal()
    config.train.task_loss_multipliers = {'t2v': 2.0}
    multipliers = task_loss_multipliers(config)
    assert len(multipliers) == NUM_TASKS
    assert multipliers[TASKS_BY_NAME['t2v'].index] == 2.0 and sum(multipliers) == NUM_TASKS + 1


def test_prefix_bit_flip_rates_are_indexed_by_task_id():
    config = _runlocal()
    assert not any(prefix_visual_bit_flip_rates(config))  # off by default
    config.train.prefix_visual_bit_flip = 0.05
    assert prefix_visual_bit_flip_rates(config) == [0.05] * NUM_TASKS  # no tasks named: every task
    config.train.prefix_visual_bit_flip_tasks = 'video_to_audio'
    rates = prefix_visual_bit_flip_rates(config)
    assert rates[TASKS_BY_NAME['video_to_audio'].index] == 0.05 and sum(rates) == 0.05
    config.train.prefix_visual_bit_flip = 1.0
    assert any('prefix_visual_bit_flip=1.0' in e for e in config_errors(config, 1, check_shards=False))


def test_resolved_config_round_trips_through_the_workdir(tmp_path):
    config = _runlocal()
    write_resolved_config(config, str(tmp_path))
    assert read_resolved_config(str(tmp_path)).to_dict()['train'] == config.to_dict()['train']
    assert (tmp_path / 'config.txt').read_text().strip()
    assert default_workdir('experiments/t2v_base.py:runlocal').endswith(os.path.join('vp_jax_runs', 't2v_base'))


def test_main_exits_with_the_config_errors_before_doing_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'vp_jax.main', f'--config={T2V_BASE}:runlocal', '--mode=compile',
         f'--workdir={tmp_path}', '--config.train.batch_size=7', '--config.train.microbatches=2'],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode != 0
    assert 'config.train.batch_size=7 is not divisible by config.train.microbatches=2' in result.stderr
    assert f'workdir={tmp_path}' in result.stdout
