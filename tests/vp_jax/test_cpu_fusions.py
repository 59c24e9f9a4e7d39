"""vp_jax/cpu_fusions.py: the LM's train and eval steps compile with XLA:CPU's YNNPACK fusions
unless the user's XLA_FLAGS say otherwise or the devices are not CPUs, and train the same model.

Training runs in fresh processes: XLA reads XLA_FLAGS once, when the first backend starts.
"""
import json
import os
import subprocess
import sys
import types

import numpy as np

from vp_jax.cpu_fusions import LM_YNN_FUSIONS, YNN_FUSION_OPTION, lm_compiler_options
from vp_jax.partitioning import Partitioner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_FUSIONS = f'--{YNN_FUSION_OPTION}='

# Five SGD steps of a small prefix-LM on the reverse task (prefix: the sequence; output: it
# reversed), through the trainer's jitted step; SGD, not Adam, whose normalisation blows
# rounding up for near-zero gradients. Prints the losses and how many YNNPACK fusions the
# compiled step holds (and the same step compiled without the option), and saves the final
# parameters.
TRAIN = r'''
import functools, json, sys
import jax, numpy as np, optax
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig
from vp_jax.partitioning import Partitioner
from vp_jax.train_step import create_train_state, jit_train_step, make_train_step

config = TransformerConfig(vocab_size=64, num_layers=2, d_model=64, num_heads=2, head_dim=32, mlp_dim=128)
model, optimizer, partitioner = Transformer(config), optax.sgd(0.5), Partitioner()
state, shardings = partitioner.init_sharded(functools.partial(create_train_state, model, optimizer),
                                            jax.random.key(0))
train_step = make_train_step(model, optimizer, {'num_tasks': 1})
step = jit_train_step(partitioner, train_step, shardings)

def with_mesh(state, batch, rng):
    with partitioner.activate():
        return train_step(state, batch, rng)
rng, batch_size, n = np.random.default_rng(0), 8, 40
def batch():
    source = rng.integers(3, config.vocab_size, (batch_size, n))
    sequence = np.concatenate([np.ones((batch_size, 1)), source, source[:, ::-1]], axis=1).astype(np.int32)
    length = sequence.shape[1] - 1
    row = lambda values, dtype: np.tile(np.asarray(values, dtype), (batch_size, 1))
    return partitioner.shard_host_batch({
        'input_tokens': sequence[:, :-1], 'target_tokens': sequence[:, 1:],
        'loss_weights': row(np.arange(length) >= n, np.float32),
        'prefix_mask': row(np.arange(length) < n + 1, np.int32),
        'segment_ids': row(np.ones(length), np.int32), 'positions': row(np.arange(length), np.int32),
        'input_modality': row(np.full(length, 4), np.int32), 'target_modality': row(np.full(length, 4), np.int32),
        'task_ids': np.zeros((batch_size, length), np.int32)})
first = batch()
hlo = step.lower(state, first, jax.random.key(1)).compile().as_text()
xla_default_hlo = jax.jit(with_mesh).lower(state, first, jax.random.key(1)).compile().as_text()
losses = []
for b in [first] + [batch() for _ in range(4)]:
    state, metrics = step(state, b, jax.random.key(1))
    sums = jax.device_get(metrics['sums'])
    losses.append(float(sums['loss_sum'] / sums['weight_sum']))
np.savez(sys.argv[1], *[np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))])
print('RESULT ' + json.dumps({'losses': losses, 'ynn_fusions': hlo.count('__ynn_fusion'),
                              'xla_default_fusions': xla_default_hlo.count('__ynn_fusion')}))
'''


def _run(script, xla_flags, *args):
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env.update(JAX_PLATFORMS='cpu', **({'XLA_FLAGS': xla_flags} if xla_flags is not None else {}))
    done = subprocess.run([sys.executable, '-c', script, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith('RESULT '))
    return json.loads(line[len('RESULT '):])


def test_options_on_cpu_only_and_the_users_xla_flags_win(monkeypatch):
    monkeypatch.delenv('XLA_FLAGS', raising=False)
    cpu_mesh = Partitioner().mesh
    assert lm_compiler_options(cpu_mesh) == {YNN_FUSION_OPTION: LM_YNN_FUSIONS}
    for platform in ('gpu', 'tpu'):
        mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform=platform)]))
        assert lm_compiler_options(mesh) == {}
    monkeypatch.setenv('XLA_FLAGS', f'--xla_force_host_platform_device_count=2 {NO_FUSIONS}')
    assert lm_compiler_options(cpu_mesh) == {}
    monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
    assert lm_compiler_options(cpu_mesh) == {YNN_FUSION_OPTION: LM_YNN_FUSIONS}


def test_the_fused_train_step_trains_the_same_model(tmp_path):
    fused = _run(TRAIN, None, str(tmp_path / 'fused.npz'))
    plain = _run(TRAIN, NO_FUSIONS, str(tmp_path / 'plain.npz'))
    # The option adds fusions to XLA's default; a user's empty flag removes them all.
    assert fused['ynn_fusions'] > fused['xla_default_fusions'] and plain['ynn_fusions'] == 0
    np.testing.assert_allclose(fused['losses'], plain['losses'], rtol=1e-4)
    assert fused['losses'][-1] < fused['losses'][0]
    a, b = np.load(tmp_path / 'fused.npz'), np.load(tmp_path / 'plain.npz')
    assert a.files == b.files
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-5, err_msg=name)
