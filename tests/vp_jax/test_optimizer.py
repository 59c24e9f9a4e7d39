"""Learning-rate schedules, clipping and weight decay of vp_jax.optimizer."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vp_jax.optimizer import (default_optimizer_config, make_optimizer, make_schedule,
                              optimizer_config_errors, weight_decay_mask)


def _config(**overrides):
    config = default_optimizer_config()
    config.update({'lr': 1.0, 'warmup_steps': 10, 'min_lr_ratio': 0.1, **overrides})
    return config


def test_cosine_warms_up_linearly_then_decays_to_the_floor():
    schedule = make_schedule(_config(schedule='cosine'), total_steps=110)
    np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 60, 110)],
                               [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6)


def test_rsqrt_decays_as_inverse_square_root_after_warmup():
    schedule = make_schedule(_config(schedule='rsqrt', min_lr_ratio=0.0), total_steps=1000)
    np.testing.assert_allclose([schedule(s) for s in (5, 10, 40, 1000)],
                               [0.5, 1.0, 0.5, 0.1], atol=1e-6)


def test_constant_holds_the_peak_after_warmup():
    schedule = make_schedule(_config(schedule='constant'), total_steps=100)
    np.testing.assert_allclose([schedule(s) for s in (0, 10, 99)], [0.0, 1.0, 1.0], atol=1e-6)


def test_norm_scales_and_biases_get_no_weight_decay():
    params = {'layers': {'pre_mlp_norm': {'scale': jnp.ones((2, 4))},
                         'mlp': {'wi_up': jnp.ones((2, 4, 8))}},
              'text_projection_bias': jnp.ones(4), 'token_embedding': jnp.ones((6, 4))}
    mask = weight_decay_mask(params)
    assert mask == {'layers': {'pre_mlp_norm': {'scale': False}, 'mlp': {'wi_up': True}},
                    'text_projection_bias': False, 'token_embedding': True}
    optimizer = make_optimizer(_config(name='adamw', weight_decay=0.5, warmup_steps=0,
                                       schedule='constant', lr=0.1), total_steps=10)
    zero_grads = {'layers': {'pre_mlp_norm': {'scale': jnp.zeros((2, 4))},
                             'mlp': {'wi_up': jnp.zeros((2, 4, 8))}},
                  'text_projection_bias': jnp.zeros(4), 'token_embedding': jnp.zeros((6, 4))}
    updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
    assert float(jnp.abs(updates['layers']['pre_mlp_norm']['scale']).max()) == 0.0
    np.testing.assert_allclose(updates['token_embedding'], -0.1 * 0.5 * params['token_embedding'])


def test_gradients_are_clipped_to_the_global_norm_before_adam():
    optimizer = make_optimizer(_config(name='adam', weight_decay=0.0, grad_clip_norm=1.0, b1=0.5,
                                       warmup_steps=0, schedule='constant'), total_steps=10)
    params = {'w': jnp.zeros(4)}
    _, state = optimizer.update({'w': jnp.full((4,), 10.0)}, optimizer.init(params), params)
    first_moment = optax.tree_utils.tree_get(state, 'mu')['w']
    np.testing.assert_allclose(first_moment, 0.5 * np.full(4, 0.5), rtol=1e-6)


def test_bad_fields_are_reported_by_name():
    errors = optimizer_config_errors(_config(schedule='linear', lr=-1.0, b2=1.5, warmup_steps=500),
                                     total_steps=100)
    joined = '\n'.join(errors)
    assert "config.optimizer.schedule='linear'" in joined
    assert 'config.optimizer.lr=-1.0' in joined and 'config.optimizer.b2=1.5' in joined
    with pytest.raises(ValueError, match='warmup_steps=10 must be smaller than config.train.num_steps=5'):
        make_optimizer(_config(), total_steps=5)
    assert any('use name=\'adamw\'' in e for e in optimizer_config_errors(
        _config(name='adam', weight_decay=0.1), 100))
    assert optimizer_config_errors({'lr': 1.0}, 10)[0].startswith('config.optimizer is missing fields')
