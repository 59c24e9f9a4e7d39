"""The trainer's data: AGD length-group batches in an order fixed by (seed, step), resumable.

`TrainInput` serves training batches; `eval_batches` serves fixed-order evaluation batches.
Both emit the model features of `vp_jax.features` (through
`data_pipelines.feature_converter`) for THIS process's rows; the trainer turns them into
global arrays (`Partitioner.shard_host_batch`).

config.data fields (defaults in `default_data_config`):
  shards_dir                 pre-tokenized dataset directory (spec.json + TFRecords)
  tasks                      {task name: relative rate}, names from `vp_jax.tasks.TASKS`
  length_groups              'auto', a list of lists of task names (AGD groups), or the same
                             as one string, groups split by ';' and tasks by ',' (so a
                             command line can override it: --config.data.length_groups=
                             't2v,i2v;t2i')
  length_group_max_padding   'auto' grouping: most padding a task may get in its group (0.1)
  text_dropout               share of rows whose caption is dropped (classifier-free guidance)
  image_video_schedule       None or {'switch_fraction': 0.25, 'image_share_before': 0.9,
                             'image_share_after': 0.1} (needs TrainInput(total_steps=...))
  num_parallel_reads         TFRecord files read at once while loading

Order and resume. Step s trains the group `mixtures.draw_group(seed, s)`. Each group counts
its batches; batch c of group g draws the task of every global row from (seed, g, c) at the
group's task rates, and whether its caption is dropped. Each (task, process) pair walks its
eligible clips in epochs, epoch e in the order `permutation(seed, task, process, e)`; the
position in that walk is a counter. `state()` is these counters (a few integers, JSON), so
`restore` jumps straight back with nothing replayed, and every process holds the same state
(each process computes every process's counters; it builds only its own rows).

Multi-host. Process i of n owns a disjoint part of the split (shard files i, i+n, ... or
every n-th example when there are fewer files than processes) and fills rows
[i * B / n, (i + 1) * B / n) of each global batch from it. This process's part is held in
memory as raw token arrays, so random access is free; that fits the demo and datasets up to
a few million clips per host, not web-scale data (which would need an indexed format such as
ArrayRecord behind the same counters).
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping

import ml_collections
import numpy as np

from data_pipelines.feature_converter import VideoPoetFeatureConverter, convert_example
from data_pipelines.mixtures import (ImageVideoSchedule, LengthGroup, draw_group,
                                     make_length_groups)
from data_pipelines.seqio_tasks import ShardDataset, example_has_fields, register_seqio_tasks
from vp_jax.features import TEXT_EMBEDDINGS, stack_features
from vp_jax.tasks import TASKS_BY_NAME, Geometry, build_sequence, get_task
from vp_jax.vocabulary import Vocabulary

STATE_VERSION = 1


def default_data_config() -> ml_collections.ConfigDict:
    """config.data with every field this module reads, at its default."""
    return ml_collections.ConfigDict({
        "shards_dir": "",
        "tasks": {"t2v": 1.0},
        "length_groups": "auto",
        "length_group_max_padding": 0.1,
        "text_dropout": 0.1,
        "image_video_schedule": None,
        "num_parallel_reads": 2,
    })


def _get(config, key, default=None):
    try:
        return config[key] if key in config else default
    except TypeError:
        return getattr(config, key, default)


def validate_data_config(data_config, check_shards: bool = True) -> list[str]:
    """Problems with config.data, each naming the field, its value and what was expected.

    `check_shards` also opens `shards_dir` and checks that the dataset has every field the
    configured tasks need. An empty list means the config is usable.
    """
    errors = []
    tasks = _get(data_config, "tasks")
    if not tasks or not hasattr(tasks, "items"):
        errors.append(f"data.tasks must be a non-empty mapping {{task name: rate}}, got {tasks!r}")
        tasks = {}
    for name, rate in dict(tasks).items():
        if name not in TASKS_BY_NAME:
            errors.append(f"data.tasks: unknown task {name!r}; known: {', '.join(TASKS_BY_NAME)}")
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            errors.append(f"data.tasks.{name}: rate must be a finite number > 0, got {rate!r}")
    groups = _parse_length_groups(_get(data_config, "length_groups", "auto"))
    if groups != "auto":
        if (not isinstance(groups, (list, tuple))
                or not all(isinstance(g, (list, tuple)) for g in groups)):
            errors.append(f"data.length_groups must be 'auto' or a list of lists of task names, "
                          f"got {groups!r}")
        else:
            listed = [n for g in groups for n in g]
            if sorted(listed) != sorted(dict(tasks)) or any(not g for g in groups):
                errors.append(f"data.length_groups must list every task of data.tasks exactly once "
                              f"in non-empty groups; got {groups!r} for tasks {sorted(dict(tasks))}")
    padding = _get(data_config, "length_group_max_padding", 0.1)
    if not isinstance(padding, (int, float)) or not 0.0 <= padding < 1.0:
        errors.append(f"data.length_group_max_padding must be in [0, 1), got {padding!r}")
    dropout = _get(data_config, "text_dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        errors.append(f"data.text_dropout must be in [0, 1), got {dropout!r}")
    schedule = _get(data_config, "image_video_schedule")
    try:
        schedule = ImageVideoSchedule.from_config(schedule)
    except (ValueError, TypeError, AttributeError) as e:
        errors.append(str(e) if "image_video_schedule" in str(e) else
                      f"data.image_video_schedule must be None or a mapping, got {schedule!r} ({e})")
        schedule = None
    known = [n for n in dict(tasks) if n in TASKS_BY_NAME]
    if schedule is not None and known:
        kinds = {get_task(n).is_image_task for n in known}
        if kinds != {True, False}:
            errors.append(f"data.image_video_schedule needs both image tasks (e.g. t2i) and video "
                          f"tasks in data.tasks, got {sorted(known)}")
    reads = _get(data_config, "num_parallel_reads", 1)
    if not isinstance(reads, int) or reads < 1:
        errors.append(f"data.num_parallel_reads must be an int >= 1, got {reads!r}")
    if check_shards:
        shards_dir = _get(data_config, "shards_dir")
        if not shards_dir or not isinstance(shards_dir, str):
            errors.append(f"data.shards_dir must name a pre-tokenized dataset directory, got {shards_dir!r}")
        else:
            try:
                dataset = ShardDataset.open(shards_dir)
            except (OSError, ValueError) as e:
                errors.append(f"data.shards_dir: {e}")
            else:
                for name in known:
                    for field in dataset.missing_fields(get_task(name)):
                        errors.append(f"data.tasks: task {name!r} needs shard field {field!r}, which "
                                      f"{shards_dir} does not have (it has {dataset.spec.fields})")
    return errors


def _check_config(data_config, check_shards: bool = True) -> None:
    errors = validate_data_config(data_config, check_shards)
    if errors:
        raise ValueError("invalid config.data:\n  " + "\n  ".join(errors))


def _process(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    return int(process_index), int(process_count)


def _task_rates(data_config) -> dict[str, float]:
    return {name: float(rate) for name, rate in dict(_get(data_config, "tasks")).items()}


def _parse_length_groups(value):
    """'auto' | 't2v,i2v;t2i' | [['t2v', 'i2v'], ['t2i']] -> 'auto' or a list of lists."""
    if isinstance(value, str) and value != "auto":
        return [[n.strip() for n in g.split(",") if n.strip()] for g in value.split(";")]
    if isinstance(value, (list, tuple)):
        return [list(g) if isinstance(g, (list, tuple)) else g for g in value]
    return value


def length_groups(data_config, vocab: Vocabulary, geometry: Geometry) -> tuple[LengthGroup, ...]:
    """The AGD length groups config.data asks for, on data of this vocabulary and geometry."""
    spec = _parse_length_groups(_get(data_config, "length_groups", "auto"))
    return make_length_groups(_task_rates(data_config), geometry, vocab, spec,
                              float(_get(data_config, "length_group_max_padding", 0.1)))


class TrainInput:
    """Training batches of this process, one AGD length group per step.

    `next_batch()` returns (group name, features) with features of `vp_jax.features`, each
    [global_batch_size / process_count, group.length] (text_embeddings
    [rows, text_length, dim] in "t5" text mode).
    """

    def __init__(self, data_config, global_batch_size: int, seed: int, split: str = "train",
                 process_index: int | None = None, process_count: int | None = None,
                 total_steps: int | None = None):
        _check_config(data_config)
        self.process_index, self.process_count = _process(process_index, process_count)
        if global_batch_size < 1 or global_batch_size % self.process_count:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple "
                             f"of process_count {self.process_count}")
        self.dataset = ShardDataset.open(_get(data_config, "shards_dir"))
        self.vocab: Vocabulary = self.dataset.vocab
        self.geometry: Geometry = self.dataset.geometry
        self.text_embedding_dim: int = self.dataset.text_embedding_dim
        self.groups: tuple[LengthGroup, ...] = length_groups(data_config, self.vocab, self.geometry)
        self.schedule = ImageVideoSchedule.from_config(_get(data_config, "image_video_schedule"))
        if self.schedule is not None and not total_steps:
            raise ValueError("data.image_video_schedule is set: TrainInput needs total_steps > 0")
        self.global_batch_size, self.seed, self.split = global_batch_size, int(seed), split
        self.total_steps = total_steps
        self.text_dropout = float(_get(data_config, "text_dropout", 0.0))
        self._rows = global_batch_size // self.process_count
        self._load(int(_get(data_config, "num_parallel_reads", 1)))
        self._step = 0
        self._group_batches = {g.name: 0 for g in self.groups}
        self._positions = {t: [0] * self.process_count for g in self.groups for t in g.tasks}
        self._orders: dict[str, tuple[int, np.ndarray]] = {}

    def _load(self, num_parallel_reads: int) -> None:
        """Reads this process's part of the split; indexes each task's eligible clips."""
        tasks = [get_task(t) for g in self.groups for t in g.tasks]
        fields = {f for t in tasks for f in self.dataset.task_fields(t)}
        ds = self.dataset.read(self.split, sorted(fields), self.process_index, self.process_count,
                               num_parallel_reads)
        # Sorted by clip_id: the epoch permutations index this list, so its order must not
        # depend on file interleaving (num_parallel_reads).
        self._clips = sorted(ds.as_numpy_iterator(), key=lambda clip: clip["clip_id"])
        self._eligible = {}
        for task in tasks:
            needed = self.dataset.task_fields(task)
            self._eligible[task.name] = np.array(
                [i for i, clip in enumerate(self._clips) if example_has_fields(clip, needed)], np.int64)
            if not self._eligible[task.name].size:
                raise ValueError(
                    f"{self.dataset.directory} split {self.split!r}: process {self.process_index} of "
                    f"{self.process_count} has no example with field(s) {list(needed)} for task "
                    f"{task.name!r} ({len(self._clips)} examples read)")

    # ----------------------------------------------------------------- batches
    def next_batch(self) -> tuple[str, dict[str, np.ndarray]]:
        g = draw_group(self.groups, self.seed, self._step, self.total_steps, self.schedule)
        group = self.groups[g]
        count = self._group_batches[group.name]
        rng = np.random.default_rng([self.seed, 0x72, g, count])
        row_tasks = rng.choice(len(group.tasks), size=self.global_batch_size, p=group.task_rates)
        drop_text = rng.random(self.global_batch_size) < self.text_dropout
        examples = []
        for row, (t, drop) in enumerate(zip(row_tasks, drop_text)):
            name, process = group.tasks[t], row // self._rows
            position = self._positions[name][process]
            self._positions[name][process] += 1
            if process == self.process_index:
                examples.append(self._example(name, position, bool(drop), group.length))
        self._group_batches[group.name] += 1
        self._step += 1
        return group.name, stack_features(examples)

    def _clip_index(self, task: str, position: int) -> int:
        eligible = self._eligible[task]
        epoch, offset = divmod(position, eligible.size)
        cached = self._orders.get(task)
        if cached is None or cached[0] != epoch:
            key = [self.seed, 0x70, get_task(task).index, self.process_index, epoch]
            cached = (epoch, np.random.default_rng(key).permutation(eligible.size))
            self._orders[task] = cached
        return int(eligible[cached[1][offset]])

    def _example(self, task_name: str, position: int, drop_text: bool, length: int
                 ) -> dict[str, np.ndarray]:
        clip = self._clips[self._clip_index(task_name, position)]
        task = get_task(task_name)
        inputs, targets = build_sequence(task, clip, self.vocab, drop_text=drop_text)
        text_embeddings = None
        if self.text_embedding_dim:  # every task carries the feature in "t5" mode
            text_embeddings = (clip[TEXT_EMBEDDINGS] if "text" in task.fields
                               else np.zeros([0, self.text_embedding_dim], np.float32))
        return convert_example(inputs, targets, task.index, self.vocab, length, text_embeddings,
                               self.geometry.text_length)

    # ------------------------------------------------------------------- resume
    def state(self) -> dict:
        """The data position after the last batch served: JSON-able, equal on all processes."""
        return {"version": STATE_VERSION, "seed": self.seed, "split": self.split,
                "process_count": self.process_count, "step": self._step,
                "group_batches": dict(self._group_batches),
                "task_positions": {t: list(p) for t, p in self._positions.items()}}

    def restore(self, state: Mapping) -> None:
        """Continues exactly where the run that saved `state` stopped."""
        expected = self.state()
        for key in ("version", "seed", "split", "process_count"):
            if state.get(key) != expected[key]:
                raise ValueError(f"data state field {key!r} is {state.get(key)!r} but this input "
                                 f"has {expected[key]!r}; cannot resume exactly")
        for key in ("group_batches", "task_positions"):
            if set(state.get(key, {})) != set(expected[key]):
                raise ValueError(f"data state field {key!r} covers {sorted(state.get(key, {}))} but "
                                 f"this input has {sorted(expected[key])} (tasks or length groups "
                                 f"changed); cannot resume exactly")
        if any(len(p) != self.process_count for p in state["task_positions"].values()):
            raise ValueError(f"data state 'task_positions' must hold {self.process_count} counters "
                             f"per task, got {state['task_positions']}")
        self._step = int(state["step"])
        self._group_batches = {k: int(v) for k, v in state["group_batches"].items()}
        self._positions = {k: [int(x) for x in v] for k, v in state["task_positions"].items()}


def eval_batches(data_config, split: str, global_batch_size: int, max_batches_per_task: int,
                 process_index: int | None = None, process_count: int | None = None
                 ) -> Iterator[tuple[str, str, dict[str, np.ndarray]]]:
    """(task, group name, this process's rows) for every configured task, in a fixed order.

    Per task: its seqio Task over `split` in file order, no shuffling, no text dropout, cut
    to `max_batches_per_task` global batches and converted at the task's group length. Every
    process reads the whole (small) evaluation split and walks the same global batches, so
    all processes run the same number of steps, and keeps its rows
    [i * B / n, (i + 1) * B / n); rows past the end of the data are all-zero padding
    (loss_weights 0, segment_ids 0).
    """
    import tensorflow as tf

    _check_config(data_config)
    process_index, process_count = _process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple "
                         f"of process_count {process_count}")
    dataset = ShardDataset.open(_get(data_config, "shards_dir"))
    groups = length_groups(data_config, dataset.vocab, dataset.geometry)
    group_of = {t: g for g in groups for t in g.tasks}
    names = sorted(_task_rates(data_config), key=lambda n: get_task(n).index)
    seqio_tasks = register_seqio_tasks(dataset, names, text_dropout=0.0)
    converter = VideoPoetFeatureConverter(dataset.vocab, dataset.text_embedding_dim)
    rows = global_batch_size // process_count
    mine = slice(process_index * rows, (process_index + 1) * rows)
    for name in names:
        group = group_of[name]
        lengths = {"inputs": group.length, "targets": group.length, "task_index": 1}
        if dataset.text_embedding_dim:
            lengths[TEXT_EMBEDDINGS] = dataset.geometry.text_length
        ds = seqio_tasks[name].get_dataset(sequence_length=None, split=split, shuffle=False,
                                           seed=0, num_epochs=1)
        ds = converter(ds.take(max_batches_per_task * global_batch_size), lengths)
        for batch in ds.batch(global_batch_size).as_numpy_iterator():
            short = global_batch_size - batch["input_tokens"].shape[0]
            batch = {k: np.pad(v, [(0, short)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
            yield name, group.name, {k: v[mine] for k, v in sorted(batch.items())}
