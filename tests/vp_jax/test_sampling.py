"""The sampler: KV-cached decoding equals full recompute, seeds reproduce, ids stay legal."""
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vp_jax import tasks
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig
from vp_jax.sampling import Sampler, SamplingOptions, choose_tokens, prefix_batch
from vp_jax.vocabulary import Vocabulary

VOCAB = Vocabulary(visual_bits=6, audio_levels=2, audio_codebook_size=8, text_vocab_size=20)
GEOMETRY = tasks.Geometry(video_latent_shape=(2, 2, 2), audio_shape=(2, 5), text_length=4)
GREEDY = SamplingOptions(temperature=0.0)


def _fields(caption):
    return dict(GEOMETRY.dummy_fields(), text_tokens=np.asarray(caption, np.int32),
                video_tokens=np.arange(8, dtype=np.int32).reshape(2, 2, 2) * 7 % 64,
                audio_tokens=np.arange(10, dtype=np.int32).reshape(2, 5) % 8)


def _prefix(task_name, captions, drop_text=False):
    task = tasks.get_task(task_name)
    inputs = [tasks.build_sequence(task, _fields(c), VOCAB, drop_text=drop_text)[0] for c in captions]
    return prefix_batch(inputs, task, VOCAB)


def _constraints(task_name):
    return tasks.output_constraints(tasks.get_task(task_name), GEOMETRY, VOCAB)


@pytest.fixture(scope='module')
def lm():
    config = TransformerConfig(vocab_size=VOCAB.padded_size, num_layers=2, d_model=32, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64, max_length=128)
    model = Transformer(config)
    params = nn.unbox(model.init(jax.random.key(0), _prefix('t2v', [[1, 2, 3]]))['params'])
    return Sampler(model), params


def test_cached_greedy_sample_equals_full_recompute(lm):
    sampler, params = lm
    prefix = _prefix('t2v', [[1, 2, 3, 4], [5, 6]])
    cached = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), GREEDY)
    recomputed = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), GREEDY, use_cache=False)
    np.testing.assert_array_equal(cached, recomputed)


def test_cached_guided_sample_equals_full_recompute(lm):
    sampler, params = lm
    prefix, null = _prefix('t2v', [[1, 2, 3, 4], [5, 6]]), _prefix('t2v', [[1, 2, 3, 4], [5, 6]], drop_text=True)
    options = SamplingOptions(temperature=0.0, guidance_scale=4.0)
    cached = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), options, null)
    recomputed = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), options, null,
                                use_cache=False)
    np.testing.assert_array_equal(cached, recomputed)


def test_guidance_scale_one_reproduces_conditional_sampling(lm):
    sampler, params = lm
    prefix, null = _prefix('t2v', [[1, 2, 3, 4]]), _prefix('t2v', [[1, 2, 3, 4]], drop_text=True)
    plain = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), GREEDY)
    guided = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1),
                            SamplingOptions(temperature=0.0, guidance_scale=1.0), null)
    np.testing.assert_array_equal(plain, guided)


def test_short_prefix_padded_in_a_batch_samples_as_it_would_alone(lm):
    sampler, params = lm
    together = sampler.sample(params, _prefix('t2v', [[1, 2, 3, 4], [5, 6]]), _constraints('t2v'),
                              jax.random.key(1), GREEDY)
    alone = sampler.sample(params, _prefix('t2v', [[5, 6]]), _constraints('t2v'), jax.random.key(1), GREEDY)
    np.testing.assert_array_equal(together[1], alone[0])


def test_same_seed_reproduces_the_sample_and_another_seed_changes_it(lm):
    sampler, params = lm
    prefix, options = _prefix('t2v', [[1, 2, 3, 4]] * 3), SamplingOptions(temperature=1.5)
    first = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(7), options)
    again = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(7), options)
    other = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(8), options)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize('task_name', ['av_continuation', 't2i', 'video_to_audio'])
def test_every_sampled_id_is_legal_for_its_output_position(lm, task_name):
    sampler, params = lm
    forced, low, high = _constraints(task_name)
    out = sampler.sample(params, _prefix(task_name, [[1, 2]] * 4), (forced, low, high), jax.random.key(3),
                         SamplingOptions(temperature=3.0))
    free = forced < 0
    np.testing.assert_array_equal(out[:, ~free], np.broadcast_to(forced[~free], out[:, ~free].shape))
    assert np.all((out[:, free] >= low[free]) & (out[:, free] < high[free]))
    decoded = tasks.split_output(tasks.get_task(task_name), out, GEOMETRY, VOCAB)
    for source, ids in decoded.items():
        assert ids.min() >= 0, source


def test_top_k_one_is_greedy(lm):
    sampler, params = lm
    prefix = _prefix('t2v', [[1, 2, 3, 4]])
    greedy = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), GREEDY)
    top1 = sampler.sample(params, prefix, _constraints('t2v'), jax.random.key(1), SamplingOptions(top_k=1))
    np.testing.assert_array_equal(greedy, top1)


def _choose(logits, options, recent=None, low=0, high=None):
    logits = jnp.asarray(logits, jnp.float32)
    high = logits.shape[1] if high is None else high
    forced, lows, highs = (jnp.array([v], jnp.int32) for v in (-1, low, high))
    return np.asarray(choose_tokens(logits, jnp.int32(0), jax.random.key(0), forced, lows, highs, recent, options))


def test_top_p_draws_only_from_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    drawn = _choose(logits, SamplingOptions(top_p=0.7))
    assert set(np.unique(drawn)) == {0, 1}
    assert 0.55 < np.mean(drawn == 0) < 0.70  # 0.5 / 0.8 after renormalising


def test_legal_range_overrides_the_most_likely_id():
    assert _choose([[9.0, 1.0, 0.0, 2.0]], GREEDY, low=1, high=3).tolist() == [1]


def test_repetition_penalty_pushes_recent_ids_down():
    logits = [[3.0, 2.5, 0.0], [3.0, 2.5, 0.0]]
    recent = jnp.array([[0, -1], [-1, -1]], jnp.int32)
    options = SamplingOptions(temperature=0.0, repetition_penalty=1.0, repetition_window=2)
    assert _choose(logits, options, recent).tolist() == [1, 0]


def test_bad_options_and_constraints_are_rejected(lm):
    sampler, params = lm
    with pytest.raises(ValueError, match='top_p'):
        SamplingOptions(top_p=0.0)
    with pytest.raises(ValueError, match='temperature'):
        SamplingOptions(temperature=-1.0)
    forced, low, high = _constraints('t2v')
    bad_high = high.copy()
    bad_high[forced < 0] = VOCAB.padded_size + 5
    with pytest.raises(ValueError, match='legal range'):
        sampler.sample(params, _prefix('t2v', [[1]]), (forced, low, bad_high), jax.random.key(0))
    prefix = _prefix('t2v', [[1]])
    prefix['input_tokens'][0, 1] = VOCAB.padded_size
    with pytest.raises(ValueError, match='input_tokens'):
        sampler.sample(params, prefix, (forced, low, high), jax.random.key(0))


_SHARDED_SCRIPT = textwrap.dedent('''
    import os
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
    import sys
    sys.path.insert(0, {test_dir!r})
    import jax, numpy as np, flax.linen as nn
    import test_sampling as t
    from vp_jax.model import Transformer
    from vp_jax.model_config import TransformerConfig
    from vp_jax.partitioning import Partitioner
    from vp_jax.sampling import Sampler, SamplingOptions
    assert len(jax.devices()) == 8
    config = TransformerConfig(vocab_size=t.VOCAB.padded_size, num_layers=2, d_model=32, num_heads=4,
                               num_kv_heads=2, head_dim=8, mlp_dim=64, max_length=128)
    model = Transformer(config)
    prefix = t._prefix('t2v', [[1, 2, 3, 4], [5, 6], [7], [8, 9, 10]])
    null = t._prefix('t2v', [[1, 2, 3, 4], [5, 6], [7], [8, 9, 10]], drop_text=True)
    init = lambda rng: model.init(rng, prefix)['params']
    options = SamplingOptions(temperature=0.0, guidance_scale=3.0)
    results = []
    for mesh in ({{'data': 1}}, {{'data': 2, 'fsdp': 2, 'tensor': 2}}):
        devices = jax.devices()[:1] if mesh == {{'data': 1}} else None
        partitioner = Partitioner(dict({{'data': -1, 'fsdp': 1, 'tensor': 1}}, **mesh), devices=devices,
                                  max_replicated_fraction=1.0)
        params, _ = partitioner.init_sharded(init, jax.random.key(0))
        out = Sampler(model, partitioner).sample(params, prefix, t._constraints('t2v'), jax.random.key(1),
                                                 options, null)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    print('SHARDED_OK')
''')


def test_sampling_sharded_over_eight_devices_matches_one_device():
    script = _SHARDED_SCRIPT.format(test_dir=os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=300)
    assert 'SHARDED_OK' in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
