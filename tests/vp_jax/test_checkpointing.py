"""Real Orbax checkpoints on disk through vp_jax.checkpointing."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from vp_jax.checkpointing import Checkpointer, abstract_like, restore_params


def _state(seed=0):
    rng = np.random.default_rng(seed)
    params = {'dense': {'kernel': jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                        'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
    return train_state.TrainState.create(apply_fn=None, params=params, tx=optax.adamw(1e-3))


def _assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_restore_returns_the_saved_state_and_metadata(tmp_path):
    state = _state()
    state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, state.params))
    with Checkpointer(str(tmp_path / 'ckpt'), save_interval_steps=1) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(1, state, metadata={'data': {'epoch': 0, 'position': 17}, 'config': 'x'})
        ckpt.wait_until_finished()
        restored, metadata = ckpt.restore(abstract_like(_state(seed=1)))
    assert isinstance(restored, train_state.TrainState)
    _assert_trees_equal(restored.params, state.params)
    _assert_trees_equal(restored.opt_state, state.opt_state)
    assert int(restored.step) == 1
    assert metadata == {'data': {'epoch': 0, 'position': 17}, 'config': 'x'}


def test_save_interval_and_max_to_keep_decide_what_stays_on_disk(tmp_path):
    state = _state()
    with Checkpointer(str(tmp_path), max_to_keep=2, save_interval_steps=3) as ckpt:
        saved = [step for step in range(10) if ckpt.save(step, state, {'step': step})]
        assert ckpt.save(10, state, {'step': 10}, force=True)
        ckpt.wait_until_finished()
        assert saved == [0, 3, 6, 9]
        assert ckpt.all_steps() == [9, 10] and ckpt.latest_step() == 10
        assert ckpt.restore_metadata(9) == {'step': 9}


def test_a_new_checkpointer_resumes_from_the_latest_step_on_disk(tmp_path):
    with Checkpointer(str(tmp_path), save_interval_steps=1, async_save=False) as ckpt:
        ckpt.save(5, _state(seed=5), {'step': 5})
    with Checkpointer(str(tmp_path)) as reopened:
        assert reopened.latest_step() == 5
        restored, _ = reopened.restore(abstract_like(_state()))
    _assert_trees_equal(restored.params, _state(seed=5).params)


class _Position:
    """A process-local state: a counter that changes after each save (like an input iterator)."""

    def __init__(self, value=0):
        self.value = value

    def save(self, directory):
        with open(os.path.join(directory, 'position.txt'), 'w') as f:
            f.write(str(self.value))

    def restore(self, directory):
        with open(os.path.join(directory, 'position.txt')) as f:
            self.value = int(f.read())


@pytest.mark.parametrize('async_save', [True, False])
def test_process_local_state_is_saved_at_save_time_and_kept_with_its_step(tmp_path, async_save):
    position = _Position()
    with Checkpointer(str(tmp_path), max_to_keep=2, save_interval_steps=1, async_save=async_save) as ckpt:
        for step in (1, 2, 3):
            position.value = 10 * step
            ckpt.save(step, _state(), {'step': step}, process_local=position)
            position.value = -1  # moves on right after the save returns
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [2, 3]
        assert 'process_0-of-1' in os.listdir(tmp_path / '3' / 'process_local')
        resumed = _Position()
        ckpt.restore(abstract_like(_state()), step=2, process_local=resumed)
        assert resumed.value == 20
        ckpt.save(4, _state(), {'step': 4})  # a step saved without one
        ckpt.wait_until_finished()
        with pytest.raises(FileNotFoundError, match=r'/4 has no process_local/ item'):
            ckpt.restore(abstract_like(_state()), process_local=resumed)


# Orbax leaves an unawaited read coroutine behind when a shape check fails.
_IGNORE_ORBAX_COROUTINE = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


@_IGNORE_ORBAX_COROUTINE
def test_missing_steps_and_mismatched_shapes_fail_clearly(tmp_path):
    with Checkpointer(str(tmp_path / 'empty')) as empty:
        with pytest.raises(FileNotFoundError, match='No checkpoint to restore in .*empty'):
            empty.restore(abstract_like(_state()))
    with Checkpointer(str(tmp_path / 'c'), save_interval_steps=1, async_save=False) as ckpt:
        ckpt.save(2, _state())
        with pytest.raises(FileNotFoundError, match=r'step 3 .*available steps: \[2\]'):
            ckpt.restore(abstract_like(_state()), step=3)
        wrong = _state().replace(params={'dense': {'kernel': jnp.zeros((8, 5)),
                                                   'bias': jnp.zeros((5,))}})
        with pytest.raises(ValueError, match=r'c/2'):
            ckpt.restore(abstract_like(wrong))
    with pytest.raises(ValueError):
        Checkpointer(str(tmp_path / 'bad'), max_to_keep=0)


@_IGNORE_ORBAX_COROUTINE
def test_restore_params_reads_only_the_parameters_for_finetuning(tmp_path):
    trained = _state(seed=3)
    with Checkpointer(str(tmp_path), save_interval_steps=1, async_save=False) as ckpt:
        ckpt.save(4, trained)
        ckpt.save(8, _state(seed=8))
    abstract_params = abstract_like(_state().params)
    _assert_trees_equal(restore_params(str(tmp_path), abstract_params), _state(seed=8).params)
    _assert_trees_equal(restore_params(str(tmp_path / '4'), abstract_params), trained.params)
    with pytest.raises(ValueError, match='init_from: parameters in'):
        restore_params(str(tmp_path), {'dense': {'kernel': jax.ShapeDtypeStruct((3, 4), jnp.float32),
                                                 'bias': jax.ShapeDtypeStruct((4,), jnp.float32)}})
    with pytest.raises(FileNotFoundError, match='does not exist'):
        restore_params(str(tmp_path / 'nope'), abstract_params)


_RESHARD_SCRIPT = textwrap.dedent('''
    import os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from vp_jax.checkpointing import Checkpointer, abstract_like
    from vp_jax.partitioning import Partitioner

    source, target = sys.argv[1], sys.argv[2]
    expected = dict(np.load(os.path.join(source, 'expected.npz')))
    mesh = Partitioner({'data': 2, 'fsdp': 2, 'tensor': 2}).mesh
    shardings = {'kernel': NamedSharding(mesh, P('fsdp', 'tensor')),
                 'bias': NamedSharding(mesh, P('tensor'))}
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
                for k, v in expected.items()}
    with Checkpointer(os.path.join(source, 'ckpt')) as ckpt:
        restored, metadata = ckpt.restore(abstract)
    assert metadata == {'saved_on': '1 device'}, metadata
    for key, value in restored.items():
        assert value.sharding == shardings[key], (key, value.sharding)
        assert len(value.addressable_shards) == 8
        np.testing.assert_array_equal(np.asarray(value), expected[key])
    assert restored['kernel'].addressable_shards[0].data.shape == (4, 2)
    doubled = jax.tree.map(lambda x: x * 2, restored)
    with Checkpointer(target, save_interval_steps=1, async_save=False) as ckpt:
        ckpt.save(1, doubled, {'saved_on': '8 devices'})
    print('OK')
''')


def test_a_checkpoint_restores_onto_a_different_mesh(tmp_path):
    rng = np.random.default_rng(0)
    tree = {'kernel': rng.normal(size=(8, 4)).astype(np.float32),
            'bias': rng.normal(size=(4,)).astype(np.float32)}
    np.savez(tmp_path / 'expected.npz', **tree)
    with Checkpointer(str(tmp_path / 'ckpt'), save_interval_steps=1, async_save=False) as ckpt:
        ckpt.save(0, jax.tree.map(jnp.asarray, tree), {'saved_on': '1 device'})
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
    result = subprocess.run(
        [sys.executable, '-c', _RESHARD_SCRIPT, str(tmp_path), str(tmp_path / 'from8')],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=one_device)
                for k, v in tree.items()}
    with Checkpointer(str(tmp_path / 'from8')) as ckpt:
        restored, metadata = ckpt.restore(abstract)
    assert metadata == {'saved_on': '8 devices'}
    for key in tree:
        np.testing.assert_array_equal(np.asarray(restored[key]), 2 * tree[key])
