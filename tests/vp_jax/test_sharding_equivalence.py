"""The same training run on 1 CPU device and on a data=2 x fsdp=2 x tensor=2 mesh of 8.

Runs in a subprocess: the 8 forced host devices must be configured before jax starts.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_RUN_BOTH_MESHES = textwrap.dedent('''
    import functools, json
    import jax, numpy as np, optax
    from vp_jax.losses import summarize_metrics
    from vp_jax.model import Transformer
    from vp_jax.model_config import TransformerConfig
    from vp_jax.partitioning import Partitioner
    from vp_jax.train_step import create_train_state, jit_train_step, make_train_step

    config = TransformerConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                               mlp_dim=64)
    model, optimizer = Transformer(config), optax.adamw(1e-2)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        length = 12
        segment_ids = np.where(np.arange(length) < 7, 1, 2)[None].repeat(16, 0).astype(np.int32)
        segment_ids[:, -2:] = 0
        batches.append({
            'input_tokens': rng.integers(1, 64, (16, length)).astype(np.int32),
            'target_tokens': rng.integers(1, 64, (16, length)).astype(np.int32),
            'loss_weights': (rng.random((16, length)) < 0.6).astype(np.float32) * (segment_ids > 0),
            'prefix_mask': (np.isin(np.arange(length), [0, 1, 2, 7, 8]))[None].repeat(16, 0).astype(np.int32),
            'segment_ids': segment_ids,
            'positions': np.concatenate([np.arange(7), np.arange(5)])[None].repeat(16, 0).astype(np.int32),
            'input_modality': np.full((16, length), 4, np.int32),
            'target_modality': np.full((16, length), 4, np.int32),
            'task_ids': rng.integers(0, 2, (16, length)).astype(np.int32),
        })

    def run(partitioner):
        state, shardings = partitioner.init_sharded(functools.partial(create_train_state, model, optimizer),
                                                    jax.random.key(0))
        step = jit_train_step(partitioner, make_train_step(model, optimizer, {'num_tasks': 2, 'num_microbatches': 2}),
                              shardings)
        losses = []
        for batch in batches:
            state, metrics = step(state, partitioner.shard_host_batch(batch), jax.random.key(1))
            losses.append(summarize_metrics(jax.device_get(metrics['sums']))['loss'])
        kernel = state.params['decoder']['layers']['mlp']['wi_gate']
        return losses, np.asarray(jax.device_get(kernel)).ravel()[:50].tolist(), str(kernel.sharding.spec)

    single = run(Partitioner(devices=jax.devices()[:1]))
    sharded = run(Partitioner({'data': 2, 'fsdp': 2, 'tensor': 2}))
    print('RESULT' + json.dumps({'single': single, 'sharded': sharded, 'devices': jax.device_count()}))
''')


def test_one_device_and_eight_device_mesh_train_identically():
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _RUN_BOTH_MESHES], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith('RESULT'))[len('RESULT'):])
    assert result['devices'] == 8
    single_losses, single_kernel, _ = result['single']
    sharded_losses, sharded_kernel, sharded_spec = result['sharded']
    assert 'fsdp' in sharded_spec and 'tensor' in sharded_spec
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=2e-5)
    np.testing.assert_allclose(sharded_kernel, single_kernel, atol=2e-5)
    assert single_losses[2] != single_losses[0]  # the parameters did move.


_SPLASH_PER_SHARD = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from vp_jax.attention import prefix_lm_mask, sharded_splash_attention, xla_attention
    from vp_jax.partitioning import Partitioner

    partitioner = Partitioner({'data': 2, 'fsdp': 2, 'tensor': 2})
    rng = np.random.default_rng(0)
    length = 256
    q = jnp.asarray(rng.normal(size=(4, length, 4, 64)), jnp.float32) * 0.125
    k, v = (jnp.asarray(rng.normal(size=(4, length, 2, 64)), jnp.float32) for _ in range(2))
    segment_ids = jnp.asarray(np.where(np.arange(length) < 160, 1, 2)[None].repeat(4, 0), jnp.int32)
    prefix = jnp.asarray(((np.arange(length) < 40) | ((np.arange(length) >= 160) & (np.arange(length) < 190)))[None]
                         .repeat(4, 0), jnp.int32)
    index = jnp.arange(length)
    reference = xla_attention(q, k, v, prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index))

    def run(*args):
        with partitioner.activate():
            return sharded_splash_attention(*args, interpret=True)

    put = lambda x, *spec: jax.device_put(x, NamedSharding(partitioner.mesh, P(*spec)))
    heads = (('data', 'fsdp'), None, 'tensor')
    out = jax.jit(run)(put(q, *heads), put(k, *heads), put(v, *heads), put(segment_ids, ('data', 'fsdp')),
                       put(prefix, ('data', 'fsdp')))
    print('RESULT', float(jnp.abs(out - reference).max()))
''')


@pytest.mark.slow
def test_splash_kernel_runs_per_shard_and_matches_the_reference_on_a_3d_mesh():
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', _SPLASH_PER_SHARD], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    max_error = float(next(l for l in proc.stdout.splitlines() if l.startswith('RESULT')).split()[1])
    assert max_error < 1e-4
