"""Next-token cross-entropy on output tokens, returned as SUMS.

Everything is a sum over tokens so normalisation happens exactly once, after gradient
accumulation and after summing across hosts: the objective is

    loss = sum_t loss_weights[t] * task_multiplier[task_ids[t]] * (ce[t] + z_loss_weight * lse[t]^2)
           / sum_t loss_weights[t]

(the denominator counts output tokens, so a task multiplier of 2 doubles that task's pull
rather than only re-weighting tasks against each other). Metrics are sums as well, overall,
per task (indexed by task_ids) and per target modality (vp_jax.vocabulary.Modality);
`summarize_metrics` turns them into means for logging.

Worked example: logits for one row of 3 positions over 2 ids with targets [1, 0, 1] and
loss_weights [0, 1, 1]: only positions 1 and 2 count, weight_sum = 2.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vp_jax.vocabulary import Modality, NUM_MODALITIES

SUMMED_FIELDS = ('loss_sum', 'z_loss_sum', 'correct_sum', 'weight_sum', 'token_count')


def _grouped_sum(values: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
    """[batch, length] values summed per group id -> [num_groups] (ids outside are dropped)."""
    return jax.ops.segment_sum(values.reshape(-1), group_ids.reshape(-1), num_segments=num_groups)


def cross_entropy_sums(logits: jax.Array, batch: Mapping[str, jax.Array], num_tasks: int,
                       task_loss_multipliers: jax.Array | None = None,
                       z_loss_weight: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Summed objective and metrics of one (micro)batch.

    Args:
      logits: [batch, length, vocab] (any float dtype; computed in float32).
      batch: target_tokens, loss_weights, segment_ids, task_ids, target_modality [batch, length].
      num_tasks: size of the per-task metric arrays.
      task_loss_multipliers: [num_tasks] float or None (all 1).
      z_loss_weight: weight of the log-partition penalty (PaLM's z-loss), 0 to disable.
    Returns:
      objective_sum: scalar, the numerator of the loss above (differentiate this).
      sums: 'loss_sum', 'z_loss_sum', 'correct_sum', 'weight_sum', 'token_count',
        'example_count' scalars, and the same under 'task/<field>' [num_tasks] and
        'modality/<field>' [NUM_MODALITIES]. loss_sum is the unmultiplied cross-entropy of the
        weighted tokens; token_count counts non-padding input positions; example_count counts
        examples with any weighted token.
    """
    logits = logits.astype(jnp.float32)
    targets = batch['target_tokens']
    weights = batch['loss_weights'].astype(jnp.float32)
    log_partition = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    cross_entropy = log_partition - target_logit
    z_loss = z_loss_weight * jnp.square(log_partition)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)

    task_ids = batch['task_ids']
    multipliers = jnp.ones([num_tasks], jnp.float32) if task_loss_multipliers is None else (
        jnp.asarray(task_loss_multipliers, jnp.float32))
    if multipliers.shape != (num_tasks,):
        raise ValueError(f'task_loss_multipliers has shape {multipliers.shape}; expected [num_tasks={num_tasks}].')
    token_multiplier = multipliers[jnp.clip(task_ids, 0, num_tasks - 1)]
    objective_sum = jnp.sum(weights * token_multiplier * (cross_entropy + z_loss))

    # An example's scored tokens are one contiguous run: its first one counts the example.
    scored = weights > 0
    segments = batch['segment_ids']
    starts_run = scored & ~(jnp.pad(scored[:, :-1], ((0, 0), (1, 0)))
                            & (jnp.pad(segments[:, :-1], ((0, 0), (1, 0))) == segments))
    per_token = {
        'loss_sum': weights * cross_entropy,
        'z_loss_sum': weights * z_loss,
        'correct_sum': weights * correct,
        'weight_sum': weights,
        'token_count': (segments != 0).astype(jnp.float32),
        'example_count': starts_run.astype(jnp.float32),
    }
    sums = {name: jnp.sum(values) for name, values in per_token.items()}
    for name, values in per_token.items():
        sums[f'task/{name}'] = _grouped_sum(values, task_ids, num_tasks)
        sums[f'modality/{name}'] = _grouped_sum(values, batch['target_modality'], NUM_MODALITIES)
    return objective_sum, sums


def summarize_metrics(sums: Mapping[str, jax.Array | np.ndarray],
                      task_names: Sequence[str] | None = None) -> dict[str, float]:
    """Means for logging from (accumulated, cross-host) sums of `cross_entropy_sums`.

    Returns 'loss', 'z_loss', 'accuracy', 'output_tokens', 'examples', 'tokens', and per
    task / modality with any weight: 'task/<name>/loss', 'task/<name>/accuracy',
    'task/<name>/output_tokens', 'task/<name>/examples', 'modality/<visual|audio|...>/loss',
    ... Tasks are named by `task_names` or by index.
    """
    sums = {key: np.asarray(value, np.float64) for key, value in sums.items()}

    def means(out_prefix: str, group: str = '', index: int | None = None) -> dict[str, float]:
        pick = (lambda key: float(sums[group + key])) if index is None else (
            lambda key: float(sums[group + key][index]))
        weight = pick('weight_sum')
        if weight <= 0:
            return {}
        return {f'{out_prefix}loss': pick('loss_sum') / weight,
                f'{out_prefix}z_loss': pick('z_loss_sum') / weight,
                f'{out_prefix}accuracy': pick('correct_sum') / weight,
                f'{out_prefix}output_tokens': weight,
                f'{out_prefix}examples': pick('example_count')}

    out = means('')
    if 'objective_sum' in sums and float(sums['weight_sum']) > 0:
        out['objective'] = float(sums['objective_sum']) / float(sums['weight_sum'])
    out['output_tokens'] = float(sums['weight_sum'])
    out['examples'] = float(sums['example_count'])
    out['tokens'] = float(sums['token_count'])
    num_tasks = sums['task/weight_sum'].shape[0]
    names = list(task_names) if task_names is not None else [str(i) for i in range(num_tasks)]
    if len(names) != num_tasks:
        raise ValueError(f'summarize_metrics: {len(names)} task names for {num_tasks} tasks.')
    for i, name in enumerate(names):
        out.update(means(f'task/{name}/', 'task/', i))
    for modality in Modality:
        out.update(means(f'modality/{modality.name.lower()}/', 'modality/', int(modality)))
    return out
