"""Pre-tokenized shards -> one SeqIO Task per VideoPoet task, all from `vp_jax.tasks.TASKS`.

`ShardDataset` opens a shard directory (spec.json + TFRecords, `data_pipelines.schema`) and
says what it holds: vocabulary, token geometry, text mode ("tokens" or "t5"), fields.
`register_seqio_tasks` then loops over the task registry once and registers, for every task
the shards can feed, a `seqio.Task` whose examples follow the common schema:

  inputs           int32 [p]       prefix vocabulary ids (`vp_jax.tasks.build_sequence`)
  targets          int32 [o]       output vocabulary ids
  task_index       int32 []        `TaskSpec.index`
  text_embeddings  float32 [n, d]  "t5" text mode only
  clip_id          string []       passthrough, for evaluation and debugging

A task applies only to examples that have its fields (a clip without sound never feeds
video_to_audio). Text dropout for classifier-free guidance rebuilds the sequence with
`build_sequence(drop_text=True)` for a seeded random share of examples: the draw of each
example comes from seqio's per-example map seeds (fixed by the `seed` given to
`get_dataset` and the example's position in the task's stream) folded with the task index,
so it is reproducible and checkpointed with the tf.data iterator, and two tasks of one
mixture never share their draws.

Process sharding (`ShardFileSource`): with `seqio.ShardInfo(i, n)` process i reads shard
files i, i+n, ... when there are at least n files (seqio's own rule), else every n-th
example of all files read in a fixed order. Unlike seqio's fallback (shuffle the files, then
take every n-th example) which examples a process owns then never depends on the shuffle,
so it can be checked up front (`input_pipeline.TrainInput`) and never changes per epoch.

The model features (loss weights, attention structure, modality ids) come from
`data_pipelines.feature_converter.VideoPoetFeatureConverter`; mixtures and AGD length groups
from `data_pipelines.mixtures`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Iterable, Mapping, Sequence

import seqio
import tensorflow as tf

from data_pipelines import schema
from vp_jax.tasks import TASKS, Geometry, TaskSpec, build_sequence, get_task
from vp_jax.vocabulary import Vocabulary

TEXT_MODES = ("tokens", "t5")
TEXT_FIELD = {"tokens": "text_tokens", "t5": "text_embeddings"}

# The input pipeline shares the host with JAX: TF must never claim accelerator memory.
tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass(frozen=True)
class ShardDataset:
    """A pre-tokenized dataset on disk, described by its spec.json."""

    directory: str
    spec: schema.ShardSpec
    vocab: Vocabulary
    geometry: Geometry
    text_mode: str
    text_embedding_dim: int

    @classmethod
    def open(cls, directory: str) -> "ShardDataset":
        directory = os.path.abspath(directory)
        spec = schema.ShardSpec.read(directory)
        where = os.path.join(directory, schema.SPEC_FILENAME)
        vocab = Vocabulary.from_dict(spec.vocabulary, source=f"{where} field 'vocabulary'")
        g = spec.geometry
        try:
            geometry = Geometry(video_latent_shape=tuple(int(x) for x in g["video_latent_shape"]),
                                audio_shape=tuple(int(x) for x in g["audio_shape"]),
                                text_length=int(g["text_length"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: field 'geometry' must hold video_latent_shape [t,h,w], "
                             f"audio_shape [levels, frames] and text_length; got {g!r} ({e})") from None
        if len(geometry.video_latent_shape) != 3 or len(geometry.audio_shape) != 2:
            raise ValueError(f"{where}: field 'geometry' has video_latent_shape "
                             f"{geometry.video_latent_shape} (expected 3 dims) and audio_shape "
                             f"{geometry.audio_shape} (expected 2 dims)")
        text = spec.tokenizers.get("text") if isinstance(spec.tokenizers, dict) else None
        kind = text.get("kind") if isinstance(text, dict) else None
        text_mode = kind or ("t5" if "text_embeddings" in spec.fields else "tokens")
        if text_mode not in TEXT_MODES:
            raise ValueError(f"{where}: field 'tokenizers.text.kind' is {text_mode!r}, "
                             f"expected one of {TEXT_MODES}")
        dim = int(g.get("text_embedding_dim") or 0)
        if text_mode == "t5" and dim <= 0:
            raise ValueError(f"{where}: text mode 't5' needs 'geometry.text_embedding_dim' > 0, got {dim}")
        unknown = set(spec.fields) - set(schema.ALL_FIELDS)
        if unknown:
            raise ValueError(f"{where}: field 'fields' lists unknown shard field(s) {sorted(unknown)}")
        return cls(directory, spec, vocab, geometry, text_mode, dim if text_mode == "t5" else 0)

    @property
    def text_field(self) -> str:
        return TEXT_FIELD[self.text_mode]

    def task_fields(self, task: TaskSpec) -> tuple[str, ...]:
        """Shard fields `task` reads ('text' resolved to this dataset's text field)."""
        return tuple(self.text_field if f == "text" else f for f in task.fields)

    def missing_fields(self, task: TaskSpec) -> list[str]:
        return [f for f in self.task_fields(task) if f not in self.spec.fields]

    def supported_tasks(self) -> list[TaskSpec]:
        return [t for t in TASKS if not self.missing_fields(t)]

    def files(self, split: str) -> list[str]:
        return self.spec.split_files(self.directory, split)

    def num_examples(self, split: str) -> int:
        return int(self.spec.splits[split]["num_examples"])

    def read(self, split: str, fields: Iterable[str], process_index: int = 0,
             process_count: int = 1, num_parallel_reads: int = 1) -> tf.data.Dataset:
        """Parsed examples of this process's disjoint part of `split`, in a fixed order.

        Process i of n reads shard files i, i+n, ... when there are at least n files, else
        every n-th example. Fields the example lacks come back zero-size.
        """
        fields = tuple(dict.fromkeys(["clip_id", *fields]))
        files = self.files(split)
        if len(files) >= process_count:
            ds = tf.data.TFRecordDataset(files[process_index::process_count],
                                         num_parallel_reads=num_parallel_reads)
        else:
            ds = tf.data.TFRecordDataset(files).shard(process_count, process_index)
        return ds.map(functools.partial(schema.parse_example, fields=fields),
                      num_parallel_calls=num_parallel_reads, deterministic=True)


def has_fields(example: Mapping[str, tf.Tensor], fields: Sequence[str]) -> tf.Tensor:
    """tf bool: every one of `fields` is present (non-empty) in the parsed example."""
    present = [tf.size(example[f]) > 0 for f in fields]
    return tf.reduce_all(tf.stack(present)) if present else tf.constant(True)


# ------------------------------------------------------------------ seqio tasks


def output_features(dataset: ShardDataset) -> dict[str, seqio.Feature]:
    ids = seqio.PassThroughVocabulary(dataset.vocab.padded_size)
    features = {
        "inputs": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
        "targets": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
        "task_index": seqio.Feature(ids, add_eos=False, dtype=tf.int32, rank=0),
    }
    if dataset.text_mode == "t5":
        features["text_embeddings"] = seqio.Feature(
            seqio.PassThroughVocabulary(1), add_eos=False, dtype=tf.float32, rank=2)
    return features


class ShardFileSource(seqio.FileDataSource):
    """A FileDataSource whose process sharding never depends on the shuffle.

    With at least `shard_info.num_shards` files it is seqio's FileDataSource (files
    i, i+n, ..., shuffled with the seed). With fewer files, seqio would shuffle the files
    and then keep every n-th example, so the examples a process owns would change with the
    seed and every epoch; here every process reads all files in a fixed order and keeps
    every n-th example, the same set each epoch (the Task's shuffle buffer still mixes them).
    """

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True  # seqio then hands shard_info to get_dataset in both cases

    def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                    shard_info: seqio.ShardInfo | None = None, **kwargs) -> tf.data.Dataset:
        if shard_info is None or len(self.list_shards(split)) >= shard_info.num_shards:
            return super().get_dataset(split, shuffle, seed, shard_info, **kwargs)
        ds = super().get_dataset(split, shuffle=False, seed=seed, **kwargs)
        return ds.shard(shard_info.num_shards, shard_info.index)


def seqio_task_name(dataset: ShardDataset, task: str, text_dropout: float,
                    shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE,
                    num_parallel_reads: int = 16) -> str:
    """Registry name of one (dataset, task, text dropout, reading options) Task; stable
    across processes."""
    key = json.dumps([dataset.directory, dataset.spec.splits, float(text_dropout),
                      int(shuffle_buffer_size), int(num_parallel_reads)], sort_keys=True)
    return f"videopoet_{task}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _read_shard_file(filename: tf.Tensor, fields: tuple[str, ...]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(filename).map(
        functools.partial(schema.parse_example, fields=fields))


def keep_examples_with_fields(ds: tf.data.Dataset, fields: Sequence[str]) -> tf.data.Dataset:
    return ds.filter(lambda ex: has_fields(ex, fields))


@seqio.map_over_dataset(num_seeds=1)
def build_task_sequences(example, seed, task_name: str, vocab: Vocabulary,
                         fields: tuple[str, ...], text_dropout: float, text_embedding_dim: int):
    """Maps a parsed clip to {inputs, targets, task_index[, text_embeddings], clip_id}.

    In "t5" text mode every task emits text_embeddings (a mixture needs one schema): the
    caption's [n, dim] rows, or [0, dim] for a task without text.
    """
    task = get_task(task_name)
    # seqio gives every Task of a mixture the same seed stream: the task index tells them apart.
    seed = tf.random.experimental.stateless_fold_in(seed, task.index)
    drop_text = tf.random.stateless_uniform([], seed=seed) < text_dropout

    def build(drop, *values):
        inputs, targets = build_sequence(task, dict(zip(fields, values)), vocab, drop_text=bool(drop))
        return inputs, targets

    inputs, targets = tf.numpy_function(build, [drop_text] + [example[f] for f in fields],
                                        [tf.int32, tf.int32], stateful=False)
    inputs.set_shape([None])
    targets.set_shape([None])
    out = {"inputs": inputs, "targets": targets, "task_index": tf.constant(task.index, tf.int32),
           "clip_id": example["clip_id"]}
    if text_embedding_dim:
        out["text_embeddings"] = (example["text_embeddings"] if "text_embeddings" in fields
                                  else tf.zeros([0, text_embedding_dim], tf.float32))
    return out


def register_seqio_tasks(dataset: ShardDataset, task_names: Sequence[str] | None = None,
                         text_dropout: float = 0.0,
                         shuffle_buffer_size: int = seqio.SHUFFLE_BUFFER_SIZE,
                         num_parallel_reads: int = 16) -> dict[str, seqio.Task]:
    """Registers (idempotently) one seqio.Task per VideoPoet task; returns {task name: Task}.

    `task_names=None` takes every task the shards can feed; a named task whose fields the
    dataset lacks entirely is an error naming the task and the field.
    `shuffle_buffer_size` is each Task's example shuffle buffer (`get_dataset(shuffle=True)`);
    `num_parallel_reads` the shard files its source reads at once (interleave cycle length).
    """
    if not 0.0 <= text_dropout < 1.0:
        raise ValueError(f"text_dropout must be in [0, 1), got {text_dropout}")
    specs = dataset.supported_tasks() if task_names is None else [get_task(n) for n in task_names]
    splits = {split: dataset.files(split) for split in dataset.spec.splits}
    registered = {}
    for task in specs:
        missing = dataset.missing_fields(task)
        if missing:
            raise ValueError(f"task {task.name!r} needs shard field(s) {missing} but "
                             f"{dataset.directory} has only {dataset.spec.fields}")
        name = seqio_task_name(dataset, task.name, text_dropout, shuffle_buffer_size,
                               num_parallel_reads)
        if name not in seqio.TaskRegistry.names():
            fields = dataset.task_fields(task)
            source = ShardFileSource(
                read_file_fn=functools.partial(_read_shard_file, fields=("clip_id",) + fields),
                split_to_filepattern=splits,
                num_input_examples={s: dataset.num_examples(s) for s in splits},
                cycle_length=int(num_parallel_reads))
            seqio.TaskRegistry.add(
                name, source=source, output_features=output_features(dataset),
                shuffle_buffer_size=int(shuffle_buffer_size),
                preprocessors=[
                    functools.partial(keep_examples_with_fields, fields=fields),
                    functools.partial(build_task_sequences, task_name=task.name,
                                      vocab=dataset.vocab, fields=fields,
                                      text_dropout=float(text_dropout),
                                      text_embedding_dim=dataset.text_embedding_dim),
                ])
        registered[task.name] = seqio.TaskRegistry.get(name)
    return registered
