"""Partitioner: mesh shapes, logical rules, named-parameter and replication checks.

Multi-device behaviour runs in a subprocess with 8 forced CPU devices (the flag must be set
before jax starts, and this pytest process already started it).
"""
import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from vp_jax.partitioning import Partitioner, resolve_mesh_shape


def test_mesh_shape_auto_fills_the_minus_one_axis():
    assert resolve_mesh_shape({'data': -1, 'fsdp': 2, 'tensor': 1}, 8) == {'data': 4, 'fsdp': 2, 'tensor': 1}
    assert resolve_mesh_shape({'tensor': 2}, 2) == {'data': 1, 'fsdp': 1, 'tensor': 2}


@pytest.mark.parametrize('shape, message', [
    ({'data': 2, 'fsdp': 2}, 'multiply to 4, expected the device count 8'),
    ({'data': -1, 'fsdp': 3}, 'do not divide|does not divide'),
    ({'data': -1, 'fsdp': -1}, 'at most one -1'),
    ({'model': 2}, "unknown axes \\['model'\\]"),
])
def test_bad_mesh_shapes_are_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        resolve_mesh_shape(shape, 8)


def test_rules_naming_an_unknown_mesh_axis_are_an_error():
    with pytest.raises(ValueError, match="mesh axis 'model' is not one of"):
        Partitioner(logical_axis_rules=[('embed', 'model')])


class _HalfNamed(nn.Module):
    @nn.compact
    def __call__(self, x):
        named = self.param('named', nn.with_logical_partitioning(nn.initializers.ones, ('embed', 'mlp')), (4, 8))
        unnamed = self.param('unnamed', nn.initializers.ones, (8,))
        return x @ named + unnamed


def test_parameters_without_logical_names_fail_loudly_unless_allowed():
    init = lambda rng: _HalfNamed().init(rng, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"1 state leaves have no logical axis names.*params/unnamed \(8,\)"):
        Partitioner().init_sharded(init, jax.random.key(0))
    state, shardings = Partitioner(allow_unnamed_params=True).init_sharded(init, jax.random.key(0))
    assert shardings['params']['unnamed'].is_fully_replicated
    assert float(state['params']['named'].sum()) == 32.0


_EIGHT_DEVICE_CHECKS = textwrap.dedent('''
    import json
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    from vp_jax.model import Transformer
    from vp_jax.model_config import TransformerConfig
    from vp_jax.partitioning import Partitioner
    import flax.linen as nn

    config = TransformerConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                               mlp_dim=64)
    batch = {k: np.ones((2, 8), np.int32) for k in
             ('input_tokens', 'positions', 'segment_ids', 'prefix_mask', 'input_modality')}
    init = lambda rng: Transformer(config).init(rng, batch)
    spec = lambda array: [list(a) if isinstance(a, tuple) else a for a in array.sharding.spec]
    out = {}
    partitioner = Partitioner({'data': 2, 'fsdp': 2, 'tensor': 2})
    state, shardings = partitioner.init_sharded(init, jax.random.key(0))
    params = state['params']
    out['wi_gate'] = spec(params['decoder']['layers']['mlp']['wi_gate'])
    out['embedding'] = spec(params['token_embedding'])
    out['key_shard_shape'] = list(params['decoder']['layers']['attention']['key'].addressable_shards[0].data.shape)
    global_batch = partitioner.shard_host_batch({'x': np.arange(16 * 3).reshape(16, 3)})
    out['batch_spec'] = spec(global_batch['x'])
    out['batch_shape'] = list(global_batch['x'].shape)
    out['batch_shard_rows'] = global_batch['x'].addressable_shards[0].data.shape[0]
    for name, kwargs in {
            'replicated': dict(mesh_shape={'data': 1, 'fsdp': 8, 'tensor': 1},
                               logical_axis_rules=[('batch', ('data', 'fsdp'))]),
            'indivisible': dict(mesh_shape={'data': 1, 'fsdp': 1, 'tensor': 8})}.items():
        try:
            Partitioner(**kwargs).abstract_sharded(init, jax.random.key(0))
            out[name] = 'no error'
        except ValueError as e:
            out[name] = str(e)
    try:
        partitioner.shard_host_batch({'x': np.zeros((6, 2))})
        out['bad_rows'] = 'no error'
    except ValueError as e:
        out['bad_rows'] = str(e)
    print('RESULT' + json.dumps(out))
''')


@pytest.fixture(scope='module')
def eight_device_results():
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _EIGHT_DEVICE_CHECKS], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith('RESULT'))
    return json.loads(line[len('RESULT'):])


def test_parameters_shard_by_logical_rules_on_a_3d_mesh(eight_device_results):
    assert eight_device_results['wi_gate'] == [None, 'fsdp', 'tensor']
    assert eight_device_results['embedding'] == ['tensor', 'fsdp']
    # key kernel [layers=2, embed=32, kv_heads=2, head_dim=8] -> embed/2 (fsdp), kv_heads/2 (tensor).
    assert eight_device_results['key_shard_shape'] == [2, 16, 1, 8]


def test_host_batch_becomes_a_global_array_sharded_over_data_and_fsdp(eight_device_results):
    assert eight_device_results['batch_spec'] == [['data', 'fsdp']]
    assert eight_device_results['batch_shape'] == [16, 3]
    assert eight_device_results['batch_shard_rows'] == 4
    assert '6 rows per process is not divisible by the 4 batch shards' in eight_device_results['bad_rows']


def test_mostly_replicated_state_on_a_sharded_mesh_is_an_error(eight_device_results):
    assert 'are fully replicated on mesh' in eight_device_results['replicated']
    assert 'max_replicated_fraction=0.1' in eight_device_results['replicated']


def test_indivisible_dimensions_name_the_parameter(eight_device_results):
    message = eight_device_results['indivisible']
    assert 'cannot be sharded' in message and 'not divisible by 8' in message
