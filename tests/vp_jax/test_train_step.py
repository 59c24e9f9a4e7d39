"""Train step: learning, exact gradient accumulation, the non-finite guard, FLOPs and AOT."""
import functools

import jax
import numpy as np
import optax
import pytest

from vp_jax.attention import prefix_lm_mask
from vp_jax.flops import attended_pairs, train_step_flops
from vp_jax.losses import summarize_metrics
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig, default_model_config
from vp_jax.partitioning import Partitioner
from vp_jax.train_step import (batch_spec, compile_train_step, create_train_state, flip_prefix_visual_bits,
                               jit_eval_step, jit_train_step, make_eval_step, make_train_step, TrainState,
                               TrainStepConfig)

CONFIG = TransformerConfig(vocab_size=32, num_layers=2, d_model=64, num_heads=4, head_dim=16, mlp_dim=128)


def reverse_task_batch(rng, batch_size=16, n=8):
    """<bos> x_1..x_n | x_n..x_1 : the prefix is the sequence, the output is it reversed."""
    source = rng.integers(3, CONFIG.vocab_size, (batch_size, n))
    sequence = np.concatenate([np.ones((batch_size, 1)), source, source[:, ::-1]], axis=1).astype(np.int32)
    length = sequence.shape[1] - 1
    row = lambda values, dtype: np.tile(np.asarray(values, dtype), (batch_size, 1))
    return {
        'input_tokens': sequence[:, :-1], 'target_tokens': sequence[:, 1:],
        'loss_weights': row(np.arange(length) >= n, np.float32),
        'prefix_mask': row(np.arange(length) < n + 1, np.int32),
        'segment_ids': row(np.ones(length), np.int32), 'positions': row(np.arange(length), np.int32),
        'input_modality': row(np.full(length, 4), np.int32), 'target_modality': row(np.full(length, 4), np.int32),
        'task_ids': np.repeat(np.arange(batch_size)[:, None] % 2, length, axis=1).astype(np.int32),
    }


@pytest.fixture(scope='module')
def tiny_training():
    model, optimizer, partitioner = Transformer(CONFIG), optax.adamw(3e-3), Partitioner()
    state, shardings = partitioner.init_sharded(functools.partial(create_train_state, model, optimizer),
                                                jax.random.key(0))
    step = jit_train_step(partitioner, make_train_step(model, optimizer, {'num_tasks': 2}), shardings)
    return model, optimizer, partitioner, state, shardings, step


def test_training_on_the_reverse_task_lowers_the_loss(tiny_training):
    model, _, partitioner, state, shardings, step = tiny_training
    state = jax.tree.map(lambda x: x.copy(), state)  # the step donates its input state.
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(80):
        state, metrics = step(state, partitioner.shard_host_batch(reverse_task_batch(rng)), jax.random.key(1))
        losses.append(summarize_metrics(jax.device_get(metrics['sums']), ['even', 'odd'])['loss'])
    assert int(state.step) == 80
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
    eval_step = jit_eval_step(partitioner, make_eval_step(model, {'num_tasks': 2}), shardings.params)
    eval_means = summarize_metrics(jax.device_get(eval_step(state.params, reverse_task_batch(rng))))
    assert eval_means['loss'] < 0.75 * np.mean(losses[:5])


def test_non_finite_step_is_flagged_and_leaves_the_state_untouched(tiny_training):
    _, _, partitioner, state, _, step = tiny_training
    state = jax.tree.map(lambda x: x.copy(), state)
    before = jax.device_get(state)
    batch = reverse_task_batch(np.random.default_rng(1))
    batch['loss_weights'][0, -1] = np.nan
    new_state, metrics = step(state, partitioner.shard_host_batch(batch), jax.random.key(1))
    assert float(metrics['non_finite']) == 1.0
    after = jax.device_get(new_state)
    assert int(after.step) == int(before.step)
    jax.tree.map(np.testing.assert_array_equal, after.params, before.params)


def test_gradient_accumulation_gives_the_one_big_batch_update(tiny_training):
    model, optimizer = Transformer(CONFIG), optax.sgd(0.5)
    params = tiny_training[3].params
    state = TrainState(step=tiny_training[3].step, params=params, opt_state=optimizer.init(params))
    batch = reverse_task_batch(np.random.default_rng(2), batch_size=8)
    # Uneven loss weights per row: exact normalisation must use the whole batch's weight.
    batch['loss_weights'][::3] = 0.0
    updated = []
    for microbatches in (1, 4):
        step = jax.jit(make_train_step(model, optimizer, {'num_tasks': 2, 'num_microbatches': microbatches}))
        new_state, metrics = step(state, batch, jax.random.key(1))
        updated.append((jax.device_get(new_state.params), jax.device_get(metrics)))
    (params_one, metrics_one), (params_four, metrics_four) = updated
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=2e-6), params_four, params_one)
    np.testing.assert_allclose(metrics_four['sums']['loss_sum'], metrics_one['sums']['loss_sum'], rtol=1e-5)
    np.testing.assert_allclose(metrics_four['grad_norm'], metrics_one['grad_norm'], rtol=1e-4)


def test_prefix_bit_flips_touch_only_visual_ids_in_the_prefix_at_each_task_s_rate():
    low, high, rates = 20, 276, (0.0, 0.05, 0.2)  # 8-bit LFQ codes; task 0 is left alone
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, (96, 400)).astype(np.int32)
    prefix = (np.arange(400) < 300).astype(np.int32)[None].repeat(96, 0)
    task_ids = np.repeat(np.arange(3, dtype=np.int32), 32)[:, None].repeat(400, 1)
    batch = {'input_tokens': tokens, 'prefix_mask': prefix, 'target_tokens': tokens + 1, 'task_ids': task_ids}
    flipped = jax.device_get(flip_prefix_visual_bits(batch, jax.random.key(0), rates, (low, high)))
    np.testing.assert_array_equal(flipped['target_tokens'], batch['target_tokens'])
    changed = flipped['input_tokens'] != tokens
    visual_prefix = (prefix == 1) & (tokens >= low) & (tokens < high)
    assert not changed[~visual_prefix].any()
    assert np.all((flipped['input_tokens'][visual_prefix] >= low) & (flipped['input_tokens'][visual_prefix] < high))
    bits_flipped = np.vectorize(lambda v: bin(v).count('1'))((flipped['input_tokens'] - low) ^ (tokens - low))
    for task, rate in enumerate(rates):
        rows = visual_prefix & (task_ids == task)
        assert abs(bits_flipped[rows].mean() / 8 - rate) < 0.006
    assert TrainStepConfig(num_tasks=2, prefix_visual_bit_flip=(0.0, 0.0)).prefix_visual_bit_flip is None  # off
    with pytest.raises(ValueError, match='power-of-two'):
        TrainStepConfig(num_tasks=2, prefix_visual_bit_flip=(0.05, 0.0), visual_range=(20, 120))
    with pytest.raises(ValueError, match=r'\[0, 1\)'):
        TrainStepConfig(num_tasks=2, prefix_visual_bit_flip=(1.0, 0.0), visual_range=(20, 276))
    with pytest.raises(ValueError, match='expected num_tasks=2'):
        TrainStepConfig(num_tasks=2, prefix_visual_bit_flip=(0.05,), visual_range=(20, 276))


def test_flop_count_counts_prefix_pairs_fully_and_outputs_causally():
    segment_ids, prefix = np.ones((1, 7), np.int32), (np.arange(7) < 3).astype(np.int32)[None]
    index = np.arange(7)
    assert attended_pairs(7, 3) == int(prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index).sum())
    bench = TransformerConfig.from_config(default_model_config())
    assert train_step_flops(bench, 8, 512) == 6 * 5_242_880 * 4096 + 3 * 4 * 4 * 64 * (512 * 513 // 2) * 4 * 8


def test_aot_compile_reports_memory_and_cost(tiny_training):
    _, _, partitioner, state, shardings, step = tiny_training
    abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
    compiled = compile_train_step(step, abstract_state, batch_spec(partitioner, 16, 16), partitioner)
    assert compiled.memory_analysis().temp_size_in_bytes > 0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert cost['flops'] > 0
