"""The LM training loop on real shards: learning, resume after a kill, NaN guard, init_from,
eval and compile modes (vp_jax.trainer, vp_jax.main.run)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from data_pipelines.testing import write_synthetic_shards
from vp_jax import trainer
from vp_jax.checkpointing import Checkpointer, restore_params
from vp_jax.config import load_config_file
from vp_jax.main import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module', autouse=True)
def compilation_cache(tmp_path_factory):
    """Runs here compile the same tiny programs again and again (new jit objects per run, and a
    subprocess): a persistent compilation cache keeps the suite fast."""
    directory = str(tmp_path_factory.mktemp('jax_cache'))
    previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update('jax_compilation_cache_dir', directory)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    yield directory
    jax.config.update('jax_compilation_cache_dir', previous[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', previous[1])


@pytest.fixture(scope='module')
def shards_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp('shards'))
    write_synthetic_shards(directory, num_examples=64, seed=0)
    return directory


def tiny_config(shards_dir, **train):
    """The runlocal job on the synthetic shards: one length group (t2v), logged every step."""
    config = load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py:runlocal'))
    config.data.shards_dir = shards_dir
    config.data.tasks = {'t2v': 1.0}
    config.data.image_video_schedule = None
    config.optimizer.warmup_steps = 2
    config.train.update({**dict(num_steps=8, log_every_steps=1, checkpoint_every_steps=4,
                                eval_every_steps=1000, async_checkpointing=False), **train})
    return config


def test_batch_flops_count_each_packed_example_prefix_fully_and_output_causally():
    from vp_jax.model_config import TransformerConfig
    model = TransformerConfig(vocab_size=16, num_layers=2, d_model=8, num_heads=2, head_dim=4, mlp_dim=16)
    batch = {'segment_ids': np.array([[1, 1, 1, 2, 2, 0]]), 'prefix_mask': np.array([[1, 1, 0, 1, 0, 0]])}
    # Segment 1: prefix 2 -> 2*2 pairs, one output sees 2 + itself -> 3; segment 2: 1 + 2 = 3.
    pairs = 4 + 3 + 3
    params_per_token = 2 * (8 * 4 * (2 * 2 + 2 * 2) + 3 * 8 * 16) + 8 * 16
    expected = 6 * params_per_token * 6 + 3 * 4 * 2 * 4 * 2 * pairs
    assert trainer.batch_train_flops(model, batch) == expected


def test_loss_falls_on_learnable_data_and_eval_reports_per_task(shards_dir, tmp_path):
    config = tiny_config(shards_dir, num_steps=40, log_every_steps=10, checkpoint_every_steps=20,
                         eval_every_steps=40, async_checkpointing=True)
    history = trainer.train(config, str(tmp_path))
    with Checkpointer(str(tmp_path / 'checkpoints')) as checkpoints:
        # Saved in the background while later steps donated (reused) the state's buffers.
        assert checkpoints.all_steps() == [20, 40]
        assert checkpoints.restore_metadata(20)['data']['step'] == 20
    losses = [history[step]['train/loss'] for step in (10, 20, 30, 40)]
    assert losses[-1] < 0.6 * losses[0], losses
    assert history[40]['train/task/t2v/loss'] == pytest.approx(history[40]['train/loss'])
    assert 'train/modality/visual/accuracy' in history[40]
    assert history[40]['perf/tflops_per_device'] > 0
    resolved = json.loads((tmp_path / 'config.json').read_text())
    assert resolved['model']['vocab_size'] > 0 and resolved['data']['shards_dir'] == shards_dir
    assert os.listdir(tmp_path / 'logs')
    evaluated = json.loads((tmp_path / 'eval' / 'step_40_validation.json').read_text())
    assert set(evaluated['metrics']) >= {'loss', 'accuracy', 'task/t2v/loss'}
    again = run(config, str(tmp_path), 'eval')
    assert again['loss'] == pytest.approx(evaluated['metrics']['loss'], rel=1e-5)


_KILLED_RUN = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {tests_dir!r})
    from test_trainer import tiny_config
    from vp_jax import trainer

    def kill_at_six(step, metrics):
        if step == 6:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.train(tiny_config({shards!r}), {workdir!r}, on_step=kill_at_six)
''')


def test_resume_after_a_kill_gives_the_losses_of_an_uninterrupted_run(shards_dir, tmp_path, compilation_cache):
    uninterrupted = trainer.train(tiny_config(shards_dir), str(tmp_path / 'straight'))
    workdir = str(tmp_path / 'killed')
    script = _KILLED_RUN.format(tests_dir=os.path.dirname(__file__), shards=shards_dir, workdir=workdir)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=compilation_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    killed = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=600, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with Checkpointer(os.path.join(workdir, 'checkpoints')) as checkpoints:
        assert checkpoints.all_steps() == [4]
    resumed = trainer.train(tiny_config(shards_dir), workdir)
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        np.testing.assert_allclose(resumed[step]['train/loss'], uninterrupted[step]['train/loss'], rtol=1e-6)


def test_non_finite_step_stops_training_and_keeps_the_last_good_checkpoint(shards_dir, tmp_path):
    config = tiny_config(shards_dir, checkpoint_every_steps=1)
    config.optimizer.update(lr=1e30, warmup_steps=0, schedule='constant', grad_clip_norm=0.0)
    with pytest.raises(trainer.NonFiniteError, match=r'step (\d+): the loss or the gradients are not finite') as info:
        trainer.train(config, str(tmp_path))
    bad_step = int(info.value.args[0].split()[1].rstrip(':'))
    with Checkpointer(str(tmp_path / 'checkpoints')) as checkpoints:
        assert checkpoints.latest_step() == bad_step - 1
        assert f'last good checkpoint is step {bad_step - 1}' in str(info.value)
        metadata = checkpoints.restore_metadata()
    params = restore_params(str(tmp_path / 'checkpoints'), _abstract_params(metadata['config']))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))


def _abstract_params(config_dict):
    import ml_collections
    job = trainer.build_job(ml_collections.ConfigDict(config_dict), trainer.make_partitioner(
        ml_collections.ConfigDict(config_dict)))
    return job.abstract_state.params


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_trained_parameters(shards_dir, tmp_path):
    base_config = tiny_config(shards_dir, num_steps=2, checkpoint_every_steps=2)
    base_config.optimizer.warmup_steps = 0
    trainer.train(base_config, str(tmp_path / 'base'))
    finetune = tiny_config(shards_dir, num_steps=1, checkpoint_every_steps=1)
    finetune.init_from = str(tmp_path / 'base' / 'checkpoints')
    finetune.optimizer.update(lr=1e-30, warmup_steps=0, schedule='constant')
    trainer.train(finetune, str(tmp_path / 'finetune'))
    abstract = _abstract_params(json.loads((tmp_path / 'base' / 'config.json').read_text()))
    base = restore_params(str(tmp_path / 'base' / 'checkpoints'), abstract)
    tuned = restore_params(str(tmp_path / 'finetune' / 'checkpoints'), abstract)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), base, tuned)


def test_compile_mode_reports_memory_and_flops_per_length_group_without_data(tmp_path, capsys):
    config = load_config_file(os.path.join(REPO, 'experiments', 't2v_base.py:runlocal'))
    config.data.tasks = {'t2v': 1.0, 't2i': 1.0}
    config.data.image_video_schedule = None
    config.model.update(num_layers=1, d_model=32, num_heads=2, head_dim=16, mlp_dim=64)
    reports = run(config, str(tmp_path), 'compile')
    assert [r['group'] for r in reports] == ['video_len342', 'image_len84']
    for report in reports:
        assert report['argument_bytes'] > 0 and report['temp_bytes'] > 0
        assert report['analytic_flops_per_step'] > 0
    assert reports[0]['analytic_flops_per_step'] > 3 * reports[1]['analytic_flops_per_step']
    assert '[compile] video_len342' in capsys.readouterr().out
    assert not os.path.exists(tmp_path / 'checkpoints')


_RESUME_ON_EIGHT_DEVICES = textwrap.dedent('''
    import json, os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    sys.path.insert(0, {tests_dir!r})
    from test_trainer import tiny_config
    from vp_jax import trainer
    config = tiny_config({shards!r})
    config.mesh.update(data=2, fsdp=2, tensor=2)
    history = trainer.train(config, {workdir!r})
    print('HISTORY', json.dumps({{str(k): v['train/loss'] for k, v in history.items()}}))
''')


@pytest.mark.slow
def test_a_run_saved_on_one_device_resumes_on_an_eight_device_mesh(shards_dir, tmp_path, compilation_cache):
    uninterrupted = trainer.train(tiny_config(shards_dir), str(tmp_path / 'straight'))
    workdir = str(tmp_path / 'moved')
    with pytest.raises(_Stop):
        trainer.train(tiny_config(shards_dir), workdir, on_step=_stop_after(4))
    script = _RESUME_ON_EIGHT_DEVICES.format(tests_dir=os.path.dirname(__file__), shards=shards_dir,
                                             workdir=workdir)
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in result.stdout
    resumed = json.loads(result.stdout.split('HISTORY', 1)[1])
    assert sorted(int(step) for step in resumed) == [5, 6, 7, 8]
    for step, loss in resumed.items():
        np.testing.assert_allclose(loss, uninterrupted[int(step)]['train/loss'], rtol=1e-4)


class _Stop(Exception):
    """Raised from on_step to end a run early (a crash after the step-4 checkpoint)."""


def _stop_after(last_step):
    def on_step(step, metrics):
        if step > last_step:
            raise _Stop()
    return on_step
