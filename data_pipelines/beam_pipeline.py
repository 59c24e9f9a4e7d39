"""The sharded clip pipeline: units -> clips -> encoded records -> shards, as Apache Beam.

One code path for every scale: the CLIs (`ingest`, `pretokenize`) build this pipeline and
run it on Beam's DirectRunner by default; `--runner=DataflowRunner` (Flink, Spark, ...)
and any other Beam pipeline flag pass straight through. Output paths go through
`tf.io.gfile`, so gs:// works on a cloud runner.

Resumable and idempotent:
  * every unit (media file, demo clip) goes to shard `sha1(unit.key) % num_shards` of its
    split, so shard contents are fixed by the inputs, not by scheduling;
  * a shard is written to a temporary name, renamed into place, and only then gets its done
    marker `<shard>.done.json` (example count, clip ids, report entries of its units);
  * a re-run skips units whose shard has a marker, so a killed run finishes the missing
    shards without duplicating or dropping a clip, and a finished run is a no-op;
  * `pipeline_config.json` fingerprints the encoder and the unit list: re-running into a
    folder made with other settings is refused instead of silently mixing shards.

Shard files: `<split>-00003-of-00016.tfrecord`, records sorted by clip id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from typing import Any, Iterable, Protocol, Sequence

from data_pipelines.clip_sources import Clip, shard_index

CONFIG_FILENAME = "pipeline_config.json"
DONE_SUFFIX = ".done.json"


class ClipEncoder(Protocol):
    """Turns clips into serialized records; `setup` runs once per worker (loads models)."""

    batch_size: int

    def setup(self) -> None: ...

    def batch_key(self, clip: Clip) -> Any: ...  # clips with equal keys may share a batch

    def encode(self, clips: list[Clip]) -> list[tuple[bytes, dict]]: ...  # (record, info)

    def describe(self) -> dict: ...  # JSON-able settings that fix the output bytes


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


@dataclasses.dataclass
class PipelineResult:
    """What the finished dataset holds, from the done markers."""

    splits: dict  # split -> {"files": [...], "num_examples": n}
    reports: list  # per-unit report entries, sorted by source
    infos: list  # per-shard merged encoder infos
    units_run: int  # units processed by this run (0 when everything was already done)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _write_atomic(path: str, data: bytes | str) -> None:
    gfile = _gfile()
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with gfile.GFile(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    gfile.rename(tmp, path, overwrite=True)


def write_shard(output_dir: str, split: str, index: int, num_shards: int,
                records: Iterable[tuple[str, bytes, dict]], reports: Iterable[dict]) -> str:
    """Writes one shard (sorted by clip id) then its done marker; returns the shard name."""
    import tensorflow as tf

    records = sorted(records, key=lambda r: r[0])
    ids = [r[0] for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"shard {split}/{index}: duplicate clip ids {dup[:5]}: two inputs "
                         "produce the same clip id (is a media file listed twice?)")
    name = shard_name(split, index, num_shards)
    path = os.path.join(output_dir, name)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for _, record, _ in records:
            writer.write(record)
    _gfile().rename(tmp, path, overwrite=True)
    info: dict = {}
    for _, _, rec_info in records:
        for key, value in rec_info.items():
            info.setdefault(key, [])
            if value not in info[key]:
                info[key].append(value)
    marker = {"shard": name, "split": split, "num_examples": len(records), "clip_ids": ids,
              "reports": sorted(reports, key=lambda r: r["source"]), "info": info}
    _write_atomic(path + DONE_SUFFIX, json.dumps(marker, sort_keys=True))
    return name


def _read_marker(output_dir: str, name: str) -> dict | None:
    gfile = _gfile()
    path = os.path.join(output_dir, name)
    if not (gfile.exists(path) and gfile.exists(path + DONE_SUFFIX)):
        return None
    with gfile.GFile(path + DONE_SUFFIX) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError:
            return None  # a marker cut short: the shard is redone


def _check_config(output_dir: str, fingerprint: dict) -> None:
    gfile = _gfile()
    path = os.path.join(output_dir, CONFIG_FILENAME)
    text = json.dumps(fingerprint, indent=2, sort_keys=True)
    if gfile.exists(path):
        with gfile.GFile(path) as f:
            old = f.read()
        if json.loads(old) != json.loads(text):
            raise ValueError(
                f"{path}: {output_dir!r} already holds a dataset made with other settings or inputs; "
                "use a new --output_dir (or delete this one) instead of mixing shards")
        return
    _write_atomic(path, text)


# ------------------------------------------------------------------ Beam transforms


def _make_dofns():
    import apache_beam as beam
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    from apache_beam.utils.windowed_value import WindowedValue

    class ProduceClips(beam.DoFn):
        REPORTS = "reports"

        def __init__(self, num_shards, total_units, logdir, name):
            self.num_shards, self.total, self.logdir, self.name = num_shards, total_units, logdir, name

        def setup(self):
            from vp_jax.progress import Progress

            self.progress = Progress(self.total, self.logdir, self.name,
                                     log_every_steps=max(1, min(100, self.total // 20)))
            self.units = self.clips = 0

        def teardown(self):
            self.progress.close()

        def process(self, unit):
            key = (unit.split, shard_index(unit.key, self.num_shards[unit.split]))
            clips, report = unit.produce()
            self.units += 1
            self.clips += len(clips)
            self.progress.update(self.units, {"clips": self.clips}, items=len(clips))
            yield beam.pvalue.TaggedOutput(self.REPORTS, (key, report))
            for clip in clips:
                yield key, clip

    class EncodeBatches(beam.DoFn):
        """Buffers clips by the encoder's batch key and encodes full batches."""

        def __init__(self, encoder):
            self.encoder = encoder

        def setup(self):
            self.encoder.setup()

        def start_bundle(self):
            self.buffers = {}

        def _flush(self, batch_key):
            items = self.buffers.pop(batch_key)
            encoded = self.encoder.encode([clip for _, clip in items])
            for (key, clip), (record, info) in zip(items, encoded):
                yield key, (clip.clip_id, record, info)

        def process(self, element):
            key, clip = element
            batch_key = self.encoder.batch_key(clip)
            self.buffers.setdefault(batch_key, []).append((key, clip))
            if len(self.buffers[batch_key]) >= self.encoder.batch_size:
                yield from self._flush(batch_key)

        def finish_bundle(self):
            for batch_key in list(self.buffers):
                for out in self._flush(batch_key):
                    yield WindowedValue(out, MIN_TIMESTAMP, [GlobalWindow()])

    class WriteShard(beam.DoFn):
        def __init__(self, output_dir, num_shards):
            self.output_dir, self.num_shards = output_dir, num_shards

        def process(self, element):
            (split, index), grouped = element
            yield write_shard(self.output_dir, split, index, self.num_shards[split],
                              grouped["records"], grouped["reports"])

    return ProduceClips, EncodeBatches, WriteShard


def run_pipeline(units: Sequence, encoder: ClipEncoder, output_dir: str,
                 num_shards: dict[str, int], pipeline_args: Sequence[str] = (),
                 name: str = "pipeline") -> PipelineResult:
    """Runs (or resumes) the pipeline and returns what the output folder holds.

    units: objects with `.key`, `.split` and `.produce() -> (list[Clip], report)` (see
    clip_sources); num_shards: shards per split; pipeline_args: Beam flags such as
    `--runner=DataflowRunner --project=...` (default DirectRunner). Progress lines (units,
    clips/s, ETA) print as units finish; TensorBoard logs go to `<output_dir>/logs`.
    """
    bad = sorted({u.split for u in units} - set(num_shards))
    if bad:
        raise ValueError(f"units have split(s) {bad} with no entry in num_shards {num_shards}")
    for split, n in num_shards.items():
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_shards[{split!r}] must be a positive int, got {n!r}")
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError("two work units have the same key (a media file listed twice?)")
    _gfile().makedirs(output_dir)
    units_digest = hashlib.sha256("\n".join(sorted(f"{u.split}/{u.key}" for u in units)).encode())
    _check_config(output_dir, {"encoder": encoder.describe(), "num_shards": num_shards,
                               "units_sha256": units_digest.hexdigest(), "num_units": len(units)})

    all_shards = [(s, i) for s, n in sorted(num_shards.items()) for i in range(n)]
    done = {sh for sh in all_shards if _read_marker(output_dir, shard_name(*sh, num_shards[sh[0]]))}
    pending = [u for u in units if (u.split, shard_index(u.key, num_shards[u.split])) not in done]
    used = {(u.split, shard_index(u.key, num_shards[u.split])) for u in units}
    for split, index in all_shards:
        if (split, index) not in done and (split, index) not in used:
            write_shard(output_dir, split, index, num_shards[split], [], [])
    if pending:
        _run_beam(pending, encoder, output_dir, num_shards, pipeline_args, name)
    return collect_result(output_dir, num_shards, units_run=len(pending))


def _run_beam(units, encoder, output_dir, num_shards, pipeline_args, name) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    ProduceClips, EncodeBatches, WriteShard = _make_dofns()
    args = list(pipeline_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    options = PipelineOptions(args)
    with beam.Pipeline(options=options) as p:
        produced = (p | "Units" >> beam.Create(list(units), reshuffle=False)
                    | "Produce" >> beam.ParDo(ProduceClips(
                        num_shards, len(units), os.path.join(output_dir, "logs"), name)).with_outputs(
                        ProduceClips.REPORTS, main="clips"))
        records = produced.clips | "Encode" >> beam.ParDo(EncodeBatches(encoder))
        _ = ({"records": records, "reports": produced[ProduceClips.REPORTS]}
             | "GroupByShard" >> beam.CoGroupByKey()
             | "Write" >> beam.ParDo(WriteShard(output_dir, num_shards)))


def collect_result(output_dir: str, num_shards: dict[str, int], units_run: int = 0) -> PipelineResult:
    """Reads every done marker; raises if a shard is missing (the run did not finish)."""
    splits, reports, infos, missing = {}, [], [], []
    for split, n in sorted(num_shards.items()):
        files, count = [], 0
        for index in range(n):
            name = shard_name(split, index, n)
            marker = _read_marker(output_dir, name)
            if marker is None:
                missing.append(name)
                continue
            files.append(name)
            count += marker["num_examples"]
            reports += marker["reports"]
            infos.append(marker["info"])
        splits[split] = {"files": files, "num_examples": count}
    if missing:
        raise RuntimeError(f"{output_dir}: shard(s) {missing[:5]} have no done marker after the run; "
                           "re-run the same command to finish them")
    return PipelineResult(splits, sorted(reports, key=lambda r: r["source"]), infos, units_run)
