"""Task mixtures: AGD length groups, VideoPoet's image/video schedule, seqio Mixtures.

Alternating Gradient Descent (VideoPoet section 5): tasks are grouped by sequence length and
every training step draws ONE group, so each batch is one fixed shape with ~0% padding and
the trainer compiles one program per group shape, never one per task. A group's length is
the longest `vp_jax.tasks.model_length` of its tasks (shorter captions still pad a little).

Rates. `data.tasks` gives each task a relative rate. A group's share of steps is the sum of
its tasks' rates; inside a group, rows are drawn with the tasks' relative rates.

Image/video schedule (VideoPoet: first 25% of steps 90% image tasks and 10% video tasks,
then 10% / 90%): when set, image groups (tasks with `is_image_task`, e.g. t2i) together get
`image_share` of the steps and video groups the rest, each class split by its own rates.
Image and video tasks therefore never share a group.

Example at the paper's geometry (video (5,16,16), audio (4,106), 64 text slots), every task
at rate 1, `max_padding=0.1`: 11 tasks make 4 groups, one compiled shape each::

    video_len2632  inpainting, outpainting, stylization           rate 3/11
    video_len1714  audio_to_video, video_to_audio, av_continuation  rate 3/11
    video_len1350  unconditional, t2v, i2v, continuation           rate 4/11
    image_len324   t2i                                             rate 1/11
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Mapping, Sequence

import numpy as np

from vp_jax.tasks import Geometry, get_task, model_length
from vp_jax.vocabulary import Vocabulary


@dataclasses.dataclass(frozen=True)
class LengthGroup:
    """Tasks trained together in one step shape.

    Attributes:
      name: e.g. 'video_len1350' (used in metrics and checkpointed data positions).
      length: model positions of every row of the group's batches.
      tasks: task names, in registry order.
      rate: share of steps without the image/video schedule (all groups sum to 1).
      task_rates: relative rate of each task inside the group (sums to 1).
      is_image: the group holds image tasks (the schedule's image class).
    """

    name: str
    length: int
    tasks: tuple[str, ...]
    rate: float
    task_rates: tuple[float, ...]
    is_image: bool


@dataclasses.dataclass(frozen=True)
class ImageVideoSchedule:
    """Share of steps given to image groups: `image_share_before` until `switch_fraction`
    of the run, `image_share_after` from then on."""

    switch_fraction: float = 0.25
    image_share_before: float = 0.9
    image_share_after: float = 0.1

    def __post_init__(self):
        for name in ("switch_fraction", "image_share_before", "image_share_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"data.image_video_schedule.{name} must be in [0, 1], got {value!r}")

    @classmethod
    def from_config(cls, config) -> "ImageVideoSchedule | None":
        if config is None:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        keys = set(config.keys())
        if keys - known:
            raise ValueError(f"data.image_video_schedule: unknown key(s) {sorted(keys - known)}; "
                             f"expected {sorted(known)}")
        return cls(**{k: float(config[k]) for k in keys})

    def image_share(self, step: int, total_steps: int) -> float:
        before = step < self.switch_fraction * total_steps
        return self.image_share_before if before else self.image_share_after


def _group(tasks: Sequence[str], task_rates: Mapping[str, float], lengths: Mapping[str, int],
           total_rate: float, taken: set[str]) -> LengthGroup:
    tasks = tuple(sorted(tasks, key=lambda n: get_task(n).index))
    is_image = get_task(tasks[0]).is_image_task
    length = max(lengths[t] for t in tasks)
    name = f"{'image' if is_image else 'video'}_len{length}"
    suffix = 2
    while name in taken:
        name, suffix = f"{'image' if is_image else 'video'}_len{length}_{suffix}", suffix + 1
    taken.add(name)
    rates = np.array([task_rates[t] for t in tasks], np.float64)
    return LengthGroup(name, length, tasks, float(rates.sum() / total_rate),
                       tuple(float(r) for r in rates / rates.sum()), is_image)


def make_length_groups(task_rates: Mapping[str, float], geometry: Geometry, vocab: Vocabulary,
                       spec="auto", max_padding: float = 0.1) -> tuple[LengthGroup, ...]:
    """Groups the configured tasks by model length.

    Args:
      task_rates: {task name: relative rate > 0}.
      spec: 'auto', or a list of lists of task names (each configured task exactly once).
      max_padding: 'auto' only: a task joins a group when it needs at least
        (1 - max_padding) of the group's length, i.e. at most that share of its row is padding.

    Returns groups longest first.
    """
    if not task_rates:
        raise ValueError("data.tasks is empty: configure at least one task")
    lengths = {name: model_length(get_task(name), geometry, vocab) for name in task_rates}
    total = float(sum(task_rates.values()))
    taken: set[str] = set()
    if spec == "auto":
        if not 0.0 <= max_padding < 1.0:
            raise ValueError(f"data.length_group_max_padding must be in [0, 1), got {max_padding}")
        groups = []
        for image_class in (False, True):
            left = sorted((n for n in task_rates if get_task(n).is_image_task == image_class),
                          key=lambda n: (-lengths[n], get_task(n).index))
            while left:
                longest = lengths[left[0]]
                members = [n for n in left if lengths[n] >= (1.0 - max_padding) * longest]
                groups.append(_group(members, task_rates, lengths, total, taken))
                left = [n for n in left if n not in members]
    else:
        listed = [n for g in spec for n in g]
        if sorted(listed) != sorted(task_rates) or any(not g for g in spec):
            raise ValueError(f"data.length_groups must list every task of data.tasks exactly once "
                             f"in non-empty groups; got {spec!r} for tasks {sorted(task_rates)}")
        for names in spec:
            kinds = {get_task(n).is_image_task for n in names}
            if len(kinds) > 1:
                raise ValueError(f"data.length_groups: group {list(names)} mixes image and video "
                                 f"tasks; the image/video schedule needs them apart")
        groups = [_group(names, task_rates, lengths, total, taken) for names in spec]
    return tuple(sorted(groups, key=lambda g: (-g.length, g.name)))


def group_probabilities(groups: Sequence[LengthGroup], step: int, total_steps: int | None,
                        schedule: ImageVideoSchedule | None) -> np.ndarray:
    """Probability of each group at `step` (float64 [num_groups], sums to 1)."""
    rates = np.array([g.rate for g in groups], np.float64)
    if schedule is None:
        return rates / rates.sum()
    if total_steps is None or total_steps <= 0:
        raise ValueError("the image/video schedule needs total_steps > 0 (TrainInput(total_steps=...))")
    image = np.array([g.is_image for g in groups])
    if image.all() or not image.any():
        raise ValueError("data.image_video_schedule needs both image tasks (e.g. t2i) and video "
                         f"tasks in data.tasks; groups are {[g.name for g in groups]}")
    share = schedule.image_share(step, total_steps)
    probs = np.where(image, share * rates / rates[image].sum(),
                     (1.0 - share) * rates / rates[~image].sum())
    return probs / probs.sum()


def draw_group(groups: Sequence[LengthGroup], seed: int, step: int, total_steps: int | None,
               schedule: ImageVideoSchedule | None) -> int:
    """Index of the group that trains at `step`: a pure function of (seed, step)."""
    probs = group_probabilities(groups, step, total_steps, schedule)
    return int(np.random.default_rng([seed, 0x67, step]).choice(len(groups), p=probs))


def register_group_mixtures(seqio_tasks: Mapping[str, "seqio.Task"],
                            groups: Sequence[LengthGroup]) -> dict[str, "seqio.Mixture"]:
    """One seqio.Mixture per length group (its tasks at their relative rates).

    `seqio_tasks` maps VideoPoet task names to their registered seqio Tasks
    (`seqio_tasks.register_seqio_tasks`). Returns {group name: Mixture}.
    """
    import seqio

    mixtures = {}
    for group in groups:
        members = [(seqio_tasks[t].name, r) for t, r in zip(group.tasks, group.task_rates)]
        key = hashlib.sha1(json.dumps(members).encode()).hexdigest()[:10]
        name = f"videopoet_{group.name}_{key}"
        if name not in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.add(name, members)
        mixtures[group.name] = seqio.MixtureRegistry.get(name)
    return mixtures
