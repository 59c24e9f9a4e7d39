"""Behaviour of the prefix-LM transformer: mask, text slots, KV cache, logical names, validation."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax.attention import (cudnn_attention, dense_attention, kv_cache_logical_axes, prefix_lm_mask,
                              splash_attention, xla_attention)
from vp_jax.model import (TextEmbeddingSlots, Transformer, VisualBitEmbedding, VisualGridEmbedding, validate_batch,
                          visual_run_index)
from vp_jax.model_config import TransformerConfig, default_model_config
from vp_jax.vocabulary import Modality

TINY = TransformerConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                         mlp_dim=64)


def _batch(batch_size=2, length=10, prefix_length=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        'input_tokens': rng.integers(1, TINY.vocab_size, (batch_size, length)).astype(np.int32),
        'positions': np.tile(np.arange(length, dtype=np.int32), (batch_size, 1)),
        'segment_ids': np.ones((batch_size, length), np.int32),
        'prefix_mask': np.tile((np.arange(length) < prefix_length).astype(np.int32), (batch_size, 1)),
        'input_modality': np.full((batch_size, length), int(Modality.VISUAL), np.int32),
    }


@pytest.fixture(autouse=True)
def _float32_matmuls_in_full():
    """GPUs run float32 matmuls as TF32 by default (~1e-3 relative); these tests compare two
    computations of the same value, so they ask for full float32 everywhere."""
    with jax.default_matmul_precision('highest'):
        yield


@pytest.fixture(scope='module')
def tiny_variables():
    """Scanned-layer variables of TINY, created once for the module (compiles are the slow part)."""
    return nn.unbox(jax.jit(Transformer(TINY).init)(jax.random.key(0), _batch()))


def _unrolled(variables):
    """The same weights laid out for scan_layers=False (layers_0, layers_1, ...)."""
    params = dict(variables['params'])
    decoder = params.pop('decoder')['layers']
    params['decoder'] = {f'layers_{i}': jax.tree.map(lambda p: p[i], decoder) for i in range(TINY.num_layers)}
    return {'params': params}


def test_mask_follows_prefix_causal_segment_and_padding_rules():
    segment_ids = jnp.array([[1, 1, 1, 2, 2, 0]])
    prefix = jnp.array([[1, 1, 0, 1, 0, 0]])
    index = jnp.arange(6)
    expected = np.array([
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
    ], bool)
    np.testing.assert_array_equal(prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index)[0], expected)


@pytest.mark.parametrize('prefix_length', [0, 20, 70])
def test_causal_block_skipping_equals_dense_attention_for_any_prefix(prefix_length):
    rng = np.random.default_rng(prefix_length)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 128, heads, 8)), jnp.float32) for heads in (4, 2, 2))
    segment_ids = jnp.asarray(np.where(np.arange(128) < 100, 1, 2)[None].repeat(2, 0))
    prefix = jnp.asarray((np.arange(128) < prefix_length)[None].repeat(2, 0).astype(np.int32))
    index = jnp.arange(128)
    mask = prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index)
    # Blocks of 32 rows: prefix 20 stays in block 0 (skipping is exact), 70 reaches block 2 (dense).
    blocked = functools.partial(xla_attention, block=32)
    np.testing.assert_allclose(jax.jit(blocked)(q, k, v, mask), dense_attention(q, k, v, mask), atol=1e-5)
    loss = lambda fn, q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask)))
    grads = jax.jit(jax.grad(functools.partial(loss, blocked), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(functools.partial(loss, _autodiff_attention), argnums=(0, 1, 2))(q, k, v)
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(grad, want, atol=1e-4)


def _autodiff_attention(q, k, v, mask):
    """The direct computation: repeat the kv heads, softmax, autodiff for the gradients."""
    groups = q.shape[2] // k.shape[2]
    k, v = (jnp.repeat(x.astype(jnp.float32), groups, axis=2) for x in (k, v))
    logits = jnp.einsum('bthd,bshd->bhts', q.astype(jnp.float32), k)
    probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e30), axis=-1)
    return jnp.einsum('bhts,bshd->bthd', probs, v)


@pytest.mark.parametrize('dtype,tolerance', [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_dense_attention_backward_matches_autodiff_of_the_direct_computation(dtype, tolerance):
    # 4 query heads over 2 kv heads; segment 0 rows (padding) attend nowhere.
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 40, heads, 8)), dtype) for heads in (4, 2, 2))
    segment_ids = jnp.asarray(np.where(np.arange(40) < 24, 1, np.where(np.arange(40) < 34, 2, 0))[None].repeat(2, 0))
    prefix = jnp.asarray((np.arange(40) % 24 < 9)[None].repeat(2, 0).astype(np.int32))
    index = jnp.arange(40)
    mask = prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index)
    weights = jnp.asarray(rng.normal(size=(2, 40, 4, 8)), jnp.float32)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * weights)

    out = jax.jit(dense_attention)(q, k, v, mask)
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), _autodiff_attention(q, k, v, mask), atol=tolerance)
    grads = jax.jit(jax.grad(functools.partial(loss, dense_attention), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(functools.partial(loss, _autodiff_attention), argnums=(0, 1, 2))(q, k, v)
    for grad, want in zip(grads, expected):
        assert grad.dtype == dtype
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(np.asarray(grad, np.float32), want, atol=tolerance * max(scale, 1.0))


@pytest.mark.parametrize('policy', ['full', 'save_dot_except_mlp'])
def test_remat_presets_keep_the_gradients(policy, tiny_variables):
    # Rematerialisation re-runs dense_attention's custom forward inside the backward pass.
    batch = _batch()

    def grads(config):
        loss = lambda params: jnp.sum(jnp.sin(Transformer(config).apply({'params': params}, batch)))
        return jax.jit(jax.grad(loss))(tiny_variables['params'])

    expected = grads(TINY)
    for got, want in zip(jax.tree.leaves(grads(dataclasses.replace(TINY, remat_policy=policy))),
                         jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_output_tokens_do_not_change_prefix_logits(tiny_variables):
    model, batch, variables = Transformer(TINY), _batch(), tiny_variables
    changed = dict(batch, input_tokens=batch['input_tokens'].copy())
    changed['input_tokens'][:, 6:] = 7
    apply = jax.jit(model.apply)
    before, after = apply(variables, batch), apply(variables, changed)
    np.testing.assert_allclose(before[:, :6], after[:, :6], atol=1e-5)
    assert np.abs(before[:, 6:] - after[:, 6:]).max() > 1e-3


@pytest.mark.parametrize('scan_layers', [True, False])
def test_cached_decoding_matches_full_recompute(scan_layers, tiny_variables):
    config = dataclasses.replace(TINY, scan_layers=scan_layers)
    model = Transformer(config)
    batch = _batch(length=10, prefix_length=4)
    variables = tiny_variables if scan_layers else _unrolled(tiny_variables)
    full = jax.jit(model.apply)(variables, batch)
    if not scan_layers:  # the unrolled stack computes what the scanned one does.
        np.testing.assert_allclose(full, jax.jit(Transformer(TINY).apply)(tiny_variables, batch), atol=1e-5)
    prefill = jax.jit(lambda v, b: model.apply(v, b, cache_length=12, method=Transformer.prefill))
    decode_step = jax.jit(lambda v, t, p, c: model.apply(v, t, p, c, method=Transformer.decode_step))
    # Prefill the 4 prefix tokens and the first 2 outputs, then decode the rest one by one.
    start = 6
    prefix_batch = {key: value[:, :start] for key, value in batch.items()}
    logits, cache = prefill(variables, prefix_batch)
    np.testing.assert_allclose(logits, full[:, :start], atol=1e-5)
    decoded = []
    for t in range(start, 10):
        step_logits, cache = decode_step(variables, batch['input_tokens'][:, t:t + 1], batch['positions'][:, t:t + 1],
                                         cache)
        decoded.append(step_logits)
    np.testing.assert_allclose(np.concatenate(decoded, axis=1), full[:, start:], atol=1e-5)
    assert int(cache['index']) == 10
    assert cache['key'].shape == (config.num_layers, 2, 12, config.num_kv_heads, config.head_dim)
    assert set(cache) == set(kv_cache_logical_axes())


def test_visual_runs_are_counted_from_their_first_token_and_continue_across_decode_steps():
    tokens = jnp.array([[1, 40, 41, 42, 2, 43, 44, 0]])  # visual ids are [40, 48)
    np.testing.assert_array_equal(visual_run_index(tokens, (40, 48)), [[-1, 0, 1, 2, -1, 0, 1, -1]])
    carried = visual_run_index(tokens[:, 3:6], (40, 48), carry=jnp.array([1]))
    np.testing.assert_array_equal(carried, [[2, -1, 0]])


def test_visual_grid_embedding_gives_each_cell_of_the_frame_its_own_vector():
    config = dataclasses.replace(TINY, visual_grid=(2, 3), visual_range=(40, 48))
    module = VisualGridEmbedding(config)
    x = jnp.zeros((1, 14, config.d_model))
    run_index = jnp.array([[-1] + list(range(12)) + [-1]])  # two 2x3 frames between two markers
    variables = nn.unbox(module.init(jax.random.key(0), x, run_index))
    out = np.asarray(module.apply(variables, x, run_index))[0]
    rows, cols = variables['params']['rows'], variables['params']['columns']
    np.testing.assert_allclose(out[1 + 4], rows[1] + cols[1], rtol=1e-6)  # cell (1, 1) of frame 0
    np.testing.assert_allclose(out[1 + 6 + 4], out[1 + 4])  # the same cell one frame later
    assert len({tuple(np.round(v, 5)) for v in out[1:7]}) == 6  # six cells, six vectors
    np.testing.assert_array_equal(out[[0, 13]], 0.0)  # markers are left alone


def test_visual_bit_embedding_adds_each_bit_of_the_id_with_its_sign():
    config = dataclasses.replace(TINY, visual_bit_embedding=True, visual_range=(40, 48))  # 3-bit ids
    module = VisualBitEmbedding(config)
    tokens = jnp.array([[2, 40, 41, 43, 47, 48]])  # a marker, ids 0, 1, 3, 7, then a non-visual id
    x = jnp.zeros((1, 6, config.d_model))
    variables = nn.unbox(module.init(jax.random.key(0), x, tokens))
    bits = np.asarray(variables['params']['bits'])
    assert bits.shape == (3, config.d_model)
    out = np.asarray(module.apply(variables, x, tokens))[0]
    np.testing.assert_allclose(out[1], -bits.sum(0), rtol=1e-6)  # id 0: every bit off
    np.testing.assert_allclose(out[2], bits[0] - bits[1] - bits[2], rtol=1e-6)  # id 1
    np.testing.assert_allclose(out[3], bits[0] + bits[1] - bits[2], rtol=1e-6)  # id 3
    np.testing.assert_allclose(out[4], bits.sum(0), rtol=1e-6)  # id 7
    np.testing.assert_array_equal(out[[0, 5]], 0.0)  # other tokens are left alone
    # Ids one bit apart are nearer than ids that differ in every bit.
    assert np.linalg.norm(out[2] - out[1]) < np.linalg.norm(out[4] - out[1])
    with pytest.raises(ValueError, match='visual_bit_embedding needs 2\\*\\*bits'):
        dataclasses.replace(config, visual_range=(40, 46))


def test_the_transformer_uses_the_visual_bit_embedding_when_on():
    config = dataclasses.replace(TINY, visual_bit_embedding=True, visual_range=(40, 48))
    model = Transformer(config)
    batch = _batch(length=8, prefix_length=4)
    batch['input_tokens'] = np.array([[1, 7, 40, 41, 42, 43, 44, 2]] * 2, np.int32)
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), batch))
    full = model.apply(variables, batch)
    zeroed = dict(variables['params'], visual_bit_embedding={'bits': jnp.zeros_like(
        variables['params']['visual_bit_embedding']['bits'])})
    assert not np.allclose(full, model.apply({'params': zeroed}, batch), atol=1e-3)


def test_cached_decoding_with_the_visual_grid_matches_full_recompute():
    config = dataclasses.replace(TINY, visual_grid=(2, 2), visual_range=(40, 48))
    model = Transformer(config)
    batch = _batch(length=12, prefix_length=4)
    batch['input_tokens'] = np.array([[1, 7, 40, 41, 2, 3, 42, 43, 44, 45, 46, 4]] * 2, np.int32)
    batch['input_tokens'][1, 4:6] = [47, 40]  # row 1: a visual run across the prefill boundary
    variables = nn.unbox(jax.jit(model.init)(jax.random.key(1), batch))
    full = jax.jit(model.apply)(variables, batch)
    without_grid = dict(variables['params'], visual_grid_embedding=jax.tree.map(
        jnp.zeros_like, variables['params']['visual_grid_embedding']))
    assert not np.allclose(full, model.apply({'params': without_grid}, batch), atol=1e-3)
    start = 6
    logits, cache = model.apply(variables, {k: v[:, :start] for k, v in batch.items()}, cache_length=12,
                                method=Transformer.prefill)
    np.testing.assert_array_equal(cache['visual_run'], [-1, 3])
    decoded = []
    for t in range(start, 12):
        step_logits, cache = model.apply(variables, batch['input_tokens'][:, t:t + 1], batch['positions'][:, t:t + 1],
                                         cache, method=Transformer.decode_step)
        decoded.append(step_logits)
    np.testing.assert_allclose(np.concatenate(decoded, axis=1), full[:, start:], atol=1e-5)


def test_text_embeddings_land_on_their_slots_in_order():
    config = dataclasses.replace(TINY, text_embedding_dim=3)
    module = TextEmbeddingSlots(config)
    x = jnp.zeros((1, 6, config.d_model))
    modality = jnp.array([[1, 3, 3, 3, 1, 4]])
    text = jnp.arange(9, dtype=jnp.float32).reshape(1, 3, 3)
    variables = nn.unbox(module.init(jax.random.key(0), x, text, modality))
    out = module.apply(variables, x, text, modality)
    kernel, bias = variables['params']['kernel'], variables['params']['bias']
    projected = text[0] @ kernel + bias
    np.testing.assert_allclose(out[0, 1:4], projected, rtol=1e-6)
    np.testing.assert_array_equal(out[0, [0, 4, 5]], 0.0)


def test_every_parameter_carries_logical_axis_names():
    for scan_layers in (True, False):
        config = dataclasses.replace(TINY, scan_layers=scan_layers, text_embedding_dim=4, position_embedding='learned',
                                     norm='layernorm')
        batch = dict(_batch(), text_embeddings=np.zeros((2, 2, 4), np.float32))
        params = jax.eval_shape(Transformer(config).init, jax.random.key(0), batch)['params']
        leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
        if scan_layers:
            assert params['decoder']['layers']['mlp']['wi_gate'].names == ('layers', 'embed', 'mlp')


def test_tied_embeddings_reuse_the_token_embedding_for_logits(tiny_variables):
    config = dataclasses.replace(TINY, tie_embeddings=True, mlp_activation='gelu', remat_policy='full')
    params = jax.eval_shape(Transformer(config).init, jax.random.key(0), _batch())['params']
    assert 'logits' not in params
    tied = {'params': {k: v for k, v in tiny_variables['params'].items() if k != 'logits'}}
    hidden_logits = jax.jit(Transformer(config).apply)(tied, _batch())
    assert hidden_logits.shape == (2, 10, TINY.vocab_size) and np.isfinite(hidden_logits).all()


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match='num_heads=6 must be a multiple of config.model.num_kv_heads=4'):
        dataclasses.replace(TINY, num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        dataclasses.replace(TINY, attention_impl='flash')
    with pytest.raises(ValueError, match=r'visual_grid=\(8, 0\)'):
        dataclasses.replace(TINY, visual_grid=(8, 0))
    with pytest.raises(ValueError, match=r'visual_range=\(0, 0\)'):
        dataclasses.replace(TINY, visual_grid=(8, 8))
    with pytest.raises(ValueError, match=r"unknown fields \['num_layer'\]"):
        TransformerConfig.from_config(dict(default_model_config().to_dict(), num_layer=3))
    assert TransformerConfig.from_config(default_model_config()).num_kv_heads == 4


def test_validate_batch_rejects_out_of_range_ids_and_missing_text():
    batch = _batch()
    validate_batch(batch, TINY)
    bad = dict(batch, input_tokens=batch['input_tokens'].copy())
    bad['input_tokens'][0, 0] = TINY.vocab_size
    with pytest.raises(ValueError, match=r'batch\[input_tokens\] has ids in \[.*, 64\]'):
        validate_batch(bad, TINY)
    with_slots = dict(batch, input_modality=batch['input_modality'].copy())
    with_slots['input_modality'][:, 1:4] = int(Modality.TEXT_EMBEDDING)
    with pytest.raises(ValueError, match="no 'text_embeddings'"):
        validate_batch(with_slots, dataclasses.replace(TINY, text_embedding_dim=4))
    with pytest.raises(ValueError, match='has 3 text-embedding slots but text_embeddings has only 2'):
        validate_batch(dict(with_slots, text_embeddings=np.zeros((2, 2, 4), np.float32)),
                       dataclasses.replace(TINY, text_embedding_dim=4))


def test_accelerator_kernels_refuse_to_run_elsewhere():
    q = jnp.zeros((1, 128, 2, 8))
    if jax.default_backend() != 'tpu':
        with pytest.raises(RuntimeError, match="attention_impl='splash' needs a TPU"):
            splash_attention(q, q, q, jnp.ones((1, 128), jnp.int32), jnp.zeros((1, 128), jnp.int32))
    model = Transformer(dataclasses.replace(TINY, attention_impl='cudnn'))
    error = (ValueError, 'needs dtype bfloat16') if jax.default_backend() == 'gpu' else (RuntimeError, 'needs a GPU')
    with pytest.raises(error[0], match=f"attention_impl='cudnn' {error[1]}"):
        jax.eval_shape(model.init, jax.random.key(0), _batch())


def _packed_attention_inputs(length=256, heads=4, kv_heads=2, head_dim=64, dtype=jnp.float32):
    """Two packed examples per row (prefixes of 40 and 40 tokens) and 16 padding positions."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, length, heads, head_dim)) * 0.125, dtype)
    k = jnp.asarray(rng.normal(size=(2, length, kv_heads, head_dim)), dtype)
    v = jnp.asarray(rng.normal(size=(2, length, kv_heads, head_dim)), dtype)
    position = np.arange(length)
    segment_ids = jnp.asarray(np.where(position < 160, 1, np.where(position < length - 16, 2, 0))[None].repeat(2, 0),
                              jnp.int32)
    prefix = jnp.asarray(((position < 40) | ((position >= 160) & (position < 200)))[None].repeat(2, 0), jnp.int32)
    return q, k, v, segment_ids, prefix


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='cuDNN attention runs on GPUs only')
def test_cudnn_attention_matches_xla_reference_with_gradients():
    q, k, v, segment_ids, prefix = _packed_attention_inputs(dtype=jnp.bfloat16)
    index = jnp.arange(q.shape[1])
    mask = prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index)
    real = np.asarray(segment_ids > 0)[..., None, None]

    def loss(fn, q, k, v):  # padding rows carry no loss, as in training
        return jnp.sum(jnp.where(real, fn(q, k, v, mask).astype(jnp.float32), 0.0) ** 2)

    reference = xla_attention(*(x.astype(jnp.float32) for x in (q, k, v)), mask)
    out = cudnn_attention(q, k, v, mask)
    assert np.isfinite(np.asarray(out, np.float32)).all()  # padding rows too: they must not poison the loss
    np.testing.assert_allclose(np.where(real, np.asarray(out, np.float32), 0), np.where(real, reference, 0),
                               atol=3e-2)
    grads = jax.grad(functools.partial(loss, cudnn_attention), argnums=(0, 1, 2))(q, k, v)
    reference_grads = jax.grad(functools.partial(loss, xla_attention), argnums=(0, 1, 2))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    for grad, expected in zip(grads, reference_grads):
        grad = np.asarray(grad, np.float32)
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(grad, expected, atol=0.05 * float(np.abs(expected).max()))


@pytest.mark.slow
def test_splash_attention_in_interpret_mode_matches_xla_reference():
    q, k, v, segment_ids, prefix = _packed_attention_inputs()
    index = jnp.arange(q.shape[1])
    reference = xla_attention(q, k, v, prefix_lm_mask(segment_ids, segment_ids, prefix, prefix, index, index))
    out = splash_attention(q, k, v, segment_ids, prefix, interpret=True)
    real = np.asarray(segment_ids > 0)[..., None, None]  # padding rows attend nowhere: any finite value will do
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, reference, 0), atol=2e-4)
