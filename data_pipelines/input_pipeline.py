"""The trainer's data: AGD length-group batches from seqio Mixtures, resumable exactly.

`TrainInput` serves training batches; `eval_batches` serves fixed-order evaluation batches.
Both read the seqio Tasks of `data_pipelines.seqio_tasks` and emit the model features of
`vp_jax.features` (through the registered `VideoPoetFeatureConverter`) for THIS process's
rows; the trainer turns them into global arrays (`Partitioner.shard_host_batch`).

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
  num_parallel_reads         shard files each Task reads at once (interleave cycle length)
  shuffle_buffer_size        examples in each Task's shuffle buffer (1000, seqio's default);
                             also what bounds the size of the saved iterator states

Batches, t5x-style. Each AGD length group g has one `seqio.Mixture` of its tasks at their
relative rates (`mixtures.register_group_mixtures`), read as
`mixture.get_dataset(split, shuffle=True, seed=group_seed(seed, g, process_index),
num_epochs=None, shard_info=seqio.ShardInfo(process_index, process_count))`, converted at
the group's length and batched to this process's rows (global batch / process count): one
tf.data iterator per group, every batch one shape, so one compiled program per group shape
(the seed differs per process so processes draw independently). Step s trains group
`mixtures.draw_group(seed, s)` (with the image/video schedule) and takes the next batch of
that group's iterator.

Order and resume. The order is fixed by the seed: file shuffles, each Task's example shuffle
buffer, the mixture's task draws (`sample_from_datasets`) and the text dropout draws are all
seeded tf.data ops, and `draw_group` is a pure function of (seed, step). The data position
is the state of those ops, so it is saved the way t5x does: `save(directory)` writes this
process's group iterators with `tf.train.Checkpoint` (shuffle buffers, sampler and random
states, prefetched batches included) plus a JSON of (step, batches served per group, and
what the pipeline was built from); `restore(directory)` checks that JSON against this input
and loads the iterators, so the next batches are exactly those of an uninterrupted run,
with nothing replayed. The trainer passes the input to `Checkpointer.save/restore` as the
step's process-local item (<checkpoints>/<step>/process_local/process_<i>-of-<n>/), so it is
committed and deleted (max_to_keep) with the train state. `state()` is the JSON part alone,
equal on all processes (the trainer also keeps it in the checkpoint metadata, for reading).
Resuming needs the same seed, data config, global batch size and process count.

Multi-host. Process i of n reads a disjoint part of the split (`seqio.ShardInfo(i, n)`:
shard files i, i+n, ..., or every n-th example when there are fewer files than processes,
see `seqio_tasks.ShardFileSource`) and fills rows [i * B / n, (i + 1) * B / n) of each
global batch from it. Every process draws the same group each step, so all processes run
the same program. A task for which some process's part holds no usable example is an error
at start-up, naming the process, the task and the fields.
"""
from __future__ import annotations

import atexit
import gc
import json
import math
import os
import weakref
from typing import Iterator

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from data_pipelines.feature_converter import VideoPoetFeatureConverter
from data_pipelines.mixtures import (ImageVideoSchedule, LengthGroup, draw_group,
                                     make_length_groups, register_group_mixtures)
from data_pipelines.seqio_tasks import ShardDataset, register_seqio_tasks
from vp_jax.features import TEXT_EMBEDDINGS
from vp_jax.tasks import TASKS_BY_NAME, Geometry, get_task
from vp_jax.vocabulary import Vocabulary

STATE_VERSION = 2
STATE_FILENAME = "input_state.json"
ITERATORS_PREFIX = "iterators"


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
        "shuffle_buffer_size": 1000,
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
    for field, default in (("num_parallel_reads", 1), ("shuffle_buffer_size", 1000)):
        value = _get(data_config, field, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(f"data.{field} must be an int >= 1, got {value!r}")
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


_OPEN_INPUTS: "weakref.WeakSet[TrainInput]" = weakref.WeakSet()


@atexit.register
def _close_open_inputs() -> None:
    """Stops every live input before the interpreter shuts down: a tf.data thread still
    running a Python (numpy_function) map at shutdown would wait for the GIL forever and
    hang the exit."""
    for train_input in list(_OPEN_INPUTS):
        train_input.close()


def group_seed(seed: int, group_index: int, process_index: int) -> int:
    """The tf.data seed of one length group's pipeline on one process: different per group
    and per process, so processes shuffle, mix tasks and drop captions independently (which
    examples a process owns never depends on the seed, see `seqio_tasks.ShardFileSource`)."""
    entropy = [seed, 0x73, group_index, process_index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)


def _task_feature_lengths(group: LengthGroup, dataset: ShardDataset) -> dict[str, int]:
    lengths = {"inputs": group.length, "targets": group.length, "task_index": 1}
    if dataset.text_embedding_dim:
        lengths[TEXT_EMBEDDINGS] = dataset.geometry.text_length
    return lengths


class TrainInput:
    """Training batches of this process, one AGD length group per step, from seqio Mixtures.

    `next_batch()` returns (group name, features) with features of `vp_jax.features`, each
    [global_batch_size / process_count, group.length] (text_embeddings
    [rows, text_length, dim] in "t5" text mode). `save(directory)` / `restore(directory)`
    checkpoint the exact position (see the module docstring).
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
        self.rows = global_batch_size // self.process_count
        self.shard_info = seqio.ShardInfo(self.process_index, self.process_count)
        self.tasks = register_seqio_tasks(
            self.dataset, [t for g in self.groups for t in g.tasks], self.text_dropout,
            shuffle_buffer_size=int(_get(data_config, "shuffle_buffer_size", 1000)),
            num_parallel_reads=int(_get(data_config, "num_parallel_reads", 1)))
        self._check_every_task_has_examples()
        self.mixtures = register_group_mixtures(self.tasks, self.groups)
        self._converter = VideoPoetFeatureConverter(self.vocab, self.text_embedding_dim)
        self._iterators = {g.name: iter(self._group_batches(g)) for g in self.groups}
        self._step = 0
        self._served = {g.name: 0 for g in self.groups}
        _OPEN_INPUTS.add(self)

    def close(self) -> None:
        """Stops the background tf.data work (done at exit anyway); no batches after this."""
        if self._iterators:
            self._iterators = {}
            gc.collect()  # the iterators' resources go now, not at some later collection

    def _check_every_task_has_examples(self) -> None:
        """A task none of whose examples in this process's part has its fields would make
        the repeated, filtered stream spin forever: fail now, naming what is missing."""
        for name, task in self.tasks.items():
            probe = task.get_dataset(None, split=self.split, shuffle=False, seed=0,
                                     shard_info=self.shard_info, num_epochs=1,
                                     trim_output_features=False, try_in_mem_cache=False)
            if next(iter(probe.take(1)), None) is None:
                files = self.dataset.files(self.split)
                part = (f"shard files {self.process_index}, {self.process_index + self.process_count}, "
                        f"... of {len(files)}" if len(files) >= self.process_count else
                        f"every {self.process_count}-th example of {len(files)} file(s)")
                raise ValueError(
                    f"{self.dataset.directory} split {self.split!r}: process {self.process_index} of "
                    f"{self.process_count} reads {part} and finds no example with field(s) "
                    f"{list(self.dataset.task_fields(get_task(name)))} for task {name!r}")

    def group_examples(self, group_name: str):
        """tf.data of this process's task features of one group (inputs, targets, task_index,
        [text_embeddings,] clip_id), unconverted: the stream `next_batch` batches, rebuilt
        from the start (for inspection and tests)."""
        g = [group.name for group in self.groups].index(group_name)
        group = self.groups[g]
        return self.mixtures[group.name].get_dataset(
            sequence_length=_task_feature_lengths(group, self.dataset), split=self.split,
            shuffle=True, seed=group_seed(self.seed, g, self.process_index),
            shard_info=self.shard_info,
            num_epochs=None, passthrough_features=["clip_id"], log_mixing_proportions=False,
            # Never truncate (an over-long example is the converter's error) and keep the
            # saved iterator states to buffers, not a cached copy of the data.
            trim_output_features=False, try_in_mem_cache=False)

    def _group_batches(self, group: LengthGroup):
        ds = self._converter(self.group_examples(group.name), _task_feature_lengths(group, self.dataset))
        return ds.batch(self.rows, drop_remainder=True).prefetch(2)

    # ----------------------------------------------------------------- batches
    def next_batch(self) -> tuple[str, dict[str, np.ndarray]]:
        group = self.groups[draw_group(self.groups, self.seed, self._step, self.total_steps,
                                       self.schedule)]
        if not self._iterators:
            raise RuntimeError("TrainInput.next_batch after close()")
        batch = next(self._iterators[group.name])
        self._served[group.name] += 1
        self._step += 1
        return group.name, {k: v.numpy() for k, v in sorted(batch.items())}

    # ------------------------------------------------------------------- resume
    def state(self) -> dict:
        """The data position after the last batch served, as JSON, equal on all processes:
        (step, batches per group) and what the pipeline is built from. Not enough to resume
        alone; `save` adds the iterator states."""
        return {"version": STATE_VERSION, "seed": self.seed, "split": self.split,
                "process_count": self.process_count, "global_batch_size": self.global_batch_size,
                "step": self._step, "group_batches": dict(self._served),
                "mixtures": {name: mixture.name for name, mixture in self.mixtures.items()}}

    def _checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(**self._iterators)

    def save(self, directory: str) -> None:
        """Writes this process's exact position into `directory` (its own, per process)."""
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(os.path.join(directory, STATE_FILENAME), "w") as f:
            json.dump(dict(self.state(), process_index=self.process_index), f, indent=1, sort_keys=True)
        self._checkpoint().write(os.path.join(directory, ITERATORS_PREFIX))

    def restore(self, directory: str) -> None:
        """Continues exactly where the input that wrote `directory` with `save` stopped."""
        path = os.path.join(directory, STATE_FILENAME)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no saved input state (expected the file "
                                    f"TrainInput.save writes)")
        with tf.io.gfile.GFile(path) as f:
            saved = json.load(f)
        expected = dict(self.state(), process_index=self.process_index)
        for key in ("version", "seed", "split", "process_count", "process_index", "global_batch_size"):
            if saved.get(key) != expected[key]:
                raise ValueError(f"{path}: data state field {key!r} is {saved.get(key)!r} but this "
                                 f"input has {expected[key]!r}; cannot resume exactly")
        if saved.get("mixtures") != expected["mixtures"]:
            raise ValueError(f"{path}: data state field 'mixtures' is {saved.get('mixtures')} but this "
                             f"input has {expected['mixtures']} (tasks, rates, length groups, text "
                             f"dropout or reading options changed); cannot resume exactly")
        prefix = os.path.join(directory, ITERATORS_PREFIX)
        try:
            self._checkpoint().read(prefix).assert_consumed()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            raise ValueError(f"{prefix}: the saved tf.data iterator states do not fit this input "
                             f"pipeline ({type(e).__name__}: {e})") from e
        self._step = int(saved["step"])
        self._served = {k: int(v) for k, v in saved["group_batches"].items()}


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
        lengths = _task_feature_lengths(group, dataset)
        ds = seqio_tasks[name].get_dataset(sequence_length=None, split=split, shuffle=False,
                                           seed=0, num_epochs=1)
        ds = converter(ds.take(max_batches_per_task * global_batch_size), lengths)
        for batch in ds.batch(global_batch_size).as_numpy_iterator():
            short = global_batch_size - batch["input_tokens"].shape[0]
            batch = {k: np.pad(v, [(0, short)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
            yield name, group.name, {k: v[mine] for k, v in sorted(batch.items())}
