"""Cached pipeline stages: run a stage once, skip it while its inputs are unchanged.

The main job is a chain of stages (demo data -> tokenizers -> pre-tokenized shards -> LM
-> evaluation -> samples). Each stage owns one folder under the workdir and a fingerprint:
the hash of the config fields it depends on plus the fingerprints of the stages it reads.
A stage is skipped when its folder holds a completion record with the same fingerprint and
its own validity check passes; otherwise its folder is handed to it to (re)build. A stage
that resumes (training) keeps its folder across interruptions because the completion
record is written only at the end, and a changed fingerprint clears the folder first so
stale outputs never mix with new ones.

    <workdir>/<stage>/STAGE_DONE.json   {"stage": ..., "fingerprint": ..., "inputs": {...}}
    <workdir>/<stage>/STAGE_STARTED.json  the fingerprint of the run in progress
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

from vp_jax.files import atomic_open

DONE_FILE = "STAGE_DONE.json"
STARTED_FILE = "STAGE_STARTED.json"


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """Stable hash of JSON-able stage inputs (config fields, upstream fingerprints)."""
    blob = json.dumps(_jsonable(inputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(x):
    if hasattr(x, "to_dict"):  # ml_collections.ConfigDict
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


@dataclasses.dataclass
class Stage:
    """One step of the pipeline.

    run(directory) builds the stage's outputs in `directory` (it may resume from what a
    killed earlier run of the SAME fingerprint left there). is_valid(directory) checks the
    outputs when skipping (e.g. the checkpoint restores, the spec lists its shards).
    """

    name: str
    inputs: Mapping[str, Any]
    run: Callable[[str], None]
    is_valid: Callable[[str], bool] = lambda directory: True

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.inputs)


def run_stage(stage: Stage, workdir: str, log: Callable[[str], None] = print) -> str:
    """Runs or skips `stage`; returns its directory."""
    directory = os.path.join(workdir, stage.name)
    fp = stage.fingerprint
    done = _read_json(os.path.join(directory, DONE_FILE))
    if done and done.get("fingerprint") == fp and stage.is_valid(directory):
        log(f"[{stage.name}] cached (fingerprint {fp}) in {directory}")
        return directory
    started = _read_json(os.path.join(directory, STARTED_FILE))
    if os.path.isdir(directory) and not (started and started.get("fingerprint") == fp):
        reason = "inputs changed" if (done or started) else "unrecognised contents"
        log(f"[{stage.name}] {reason}: rebuilding {directory}")
        shutil.rmtree(directory)
        done = None
    elif started:
        log(f"[{stage.name}] resuming an interrupted run in {directory}")
    os.makedirs(directory, exist_ok=True)
    _write_json(os.path.join(directory, STARTED_FILE), {"stage": stage.name, "fingerprint": fp})
    if done:
        os.remove(os.path.join(directory, DONE_FILE))
    t0 = time.time()
    stage.run(directory)
    if not stage.is_valid(directory):
        raise RuntimeError(f"[{stage.name}] finished but its outputs in {directory} are not valid")
    _write_json(os.path.join(directory, DONE_FILE),
                {"stage": stage.name, "fingerprint": fp, "inputs": _jsonable(stage.inputs),
                 "seconds": round(time.time() - t0, 1)})
    log(f"[{stage.name}] done in {time.time() - t0:.0f}s -> {directory}")
    return directory


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: str, payload: dict) -> None:
    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
