"""Cross-entropy sums on a hand-checked 3-position example."""
import math

import jax
import numpy as np
import pytest

from vp_jax.losses import cross_entropy_sums, summarize_metrics
from vp_jax.vocabulary import Modality

# Position 0 is prefix (weight 0). Position 1: softmax [0.75, 0.25], target 0, correct.
# Position 2: softmax [0.5, 0.5], target 1; argmax picks id 0, so wrong. Position 2 is padding
# for token_count purposes (segment 0) but still carries weight in this constructed case.
LOGITS = np.array([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]], np.float32)
BATCH = {
    'target_tokens': np.array([[1, 0, 1]], np.int32),
    'loss_weights': np.array([[0.0, 1.0, 1.0]], np.float32),
    'segment_ids': np.array([[1, 1, 0]], np.int32),
    'task_ids': np.array([[0, 0, 1]], np.int32),
    'target_modality': np.array([[0, int(Modality.VISUAL), int(Modality.AUDIO)]], np.int32),
}
CE1, CE2 = math.log(4 / 3), math.log(2.0)
LSE1, LSE2 = math.log(4.0), math.log(2.0)


def test_only_weighted_positions_count_in_the_sums():
    objective, sums = cross_entropy_sums(LOGITS, BATCH, num_tasks=2)
    assert objective == pytest.approx(CE1 + CE2, rel=1e-6)
    assert float(sums['loss_sum']) == pytest.approx(CE1 + CE2, rel=1e-6)
    assert float(sums['weight_sum']) == 2.0
    assert float(sums['correct_sum']) == 1.0
    assert float(sums['token_count']) == 2.0
    np.testing.assert_allclose(sums['task/loss_sum'], [CE1, CE2], rtol=1e-6)
    np.testing.assert_allclose(sums['task/correct_sum'], [1.0, 0.0])
    np.testing.assert_allclose(np.asarray(sums['modality/loss_sum'])[[Modality.VISUAL, Modality.AUDIO]], [CE1, CE2],
                               rtol=1e-6)
    assert float(sums['modality/weight_sum'][Modality.PAD]) == 0.0


def test_task_multipliers_and_z_loss_scale_the_objective_not_the_reported_loss():
    objective, sums = cross_entropy_sums(LOGITS, BATCH, num_tasks=2, task_loss_multipliers=np.array([1.0, 3.0]),
                                         z_loss_weight=0.1)
    expected = (CE1 + 0.1 * LSE1 ** 2) + 3.0 * (CE2 + 0.1 * LSE2 ** 2)
    assert float(objective) == pytest.approx(expected, rel=1e-6)
    assert float(sums['loss_sum']) == pytest.approx(CE1 + CE2, rel=1e-6)
    assert float(sums['z_loss_sum']) == pytest.approx(0.1 * (LSE1 ** 2 + LSE2 ** 2), rel=1e-6)


def test_summaries_are_means_over_output_tokens_per_task_and_modality():
    _, sums = cross_entropy_sums(LOGITS, BATCH, num_tasks=2)
    means = summarize_metrics(sums, task_names=['t2v', 'v2a'])
    assert means['loss'] == pytest.approx((CE1 + CE2) / 2, rel=1e-6)
    assert means['accuracy'] == 0.5
    assert means['task/t2v/loss'] == pytest.approx(CE1, rel=1e-6)
    assert means['task/v2a/accuracy'] == 0.0
    assert means['modality/audio/loss'] == pytest.approx(CE2, rel=1e-6)
    assert 'modality/text/loss' not in means  # no weight, no mean.


def test_sums_of_two_halves_equal_sums_of_the_whole():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 7)).astype(np.float32)
    batch = {'target_tokens': rng.integers(0, 7, (4, 5)).astype(np.int32),
             'loss_weights': rng.integers(0, 2, (4, 5)).astype(np.float32),
             'segment_ids': np.ones((4, 5), np.int32), 'task_ids': rng.integers(0, 3, (4, 5)).astype(np.int32),
             'target_modality': np.full((4, 5), 4, np.int32)}
    sums = jax.jit(lambda logits, batch: cross_entropy_sums(logits, batch, num_tasks=3)[1])
    whole = sums(logits, batch)
    halves = [sums(logits[s], {k: v[s] for k, v in batch.items()}) for s in (slice(0, 2), slice(2, 4))]
    for key in whole:
        np.testing.assert_allclose(whole[key], halves[0][key] + halves[1][key], rtol=1e-5)


def test_wrong_number_of_task_multipliers_is_an_error():
    with pytest.raises(ValueError, match=r'task_loss_multipliers has shape \(3,\); expected \[num_tasks=2\]'):
        cross_entropy_sums(LOGITS, BATCH, num_tasks=2, task_loss_multipliers=np.ones(3))


def test_examples_are_counted_once_each_even_when_packed_into_one_row():
    # Row 0 packs two examples (segments 1 and 2) whose scored runs touch; row 1 holds one
    # example of task 1 with a prefix, and padding.
    batch = {
        'target_tokens': np.zeros([2, 6], np.int32),
        'loss_weights': np.array([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]], np.float32),
        'segment_ids': np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]], np.int32),
        'task_ids': np.array([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], np.int32),
        'target_modality': np.zeros([2, 6], np.int32),
    }
    _, sums = cross_entropy_sums(np.zeros([2, 6, 3], np.float32), batch, num_tasks=2)
    means = summarize_metrics(sums, task_names=['t2v', 'v2a'])
    assert means['examples'] == 3
    assert (means['task/t2v/examples'], means['task/t2v/output_tokens']) == (2, 4)
    assert (means['task/v2a/examples'], means['task/v2a/output_tokens']) == (1, 2)
