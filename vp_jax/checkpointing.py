"""Orbax checkpoints shared by the LM trainer and the tokenizer trainers.

Why a wrapper: every trainer needs the same four things and nothing else -- save a sharded
state with a JSON metadata dict (data position, resolved config, ...) on an interval,
keep the last `max_to_keep`, find and restore the latest step onto *any* mesh, and pull
just the parameters out of someone else's checkpoint to start a finetune.

On disk (one Orbax CheckpointManager directory):

    <directory>/<step>/state/      the pytree (TrainState or any tree of arrays), sharded
    <directory>/<step>/metadata/   JSON dict given to `save`
    <directory>/<step>/process_local/process_<i>-of-<n>/
                                   optional: what process i of n saved for itself (the LM
                                   trainer's tf.data iterator states, `ProcessLocalState`)

The process-local item is part of the step: it is committed with the state (a step without
it is never visible) and deleted with it when `max_to_keep` drops the step. It is written
synchronously inside `save` (the object may change as soon as `save` returns, e.g. an input
iterator advancing), so step directories are created synchronously too.

Restoring onto another mesh: pass `abstract_state`, a pytree of `jax.ShapeDtypeStruct`
whose `.sharding` is the *new* sharding (see `abstract_like`); Orbax reads each shard
straight into place, so a state saved on 1 device restores onto 8 and vice versa.

Saving is asynchronous by default: `save` returns once the arrays are copied off the
devices; call `wait_until_finished` (or `close`) before the process exits.

Example:
    ckpt = Checkpointer('/tmp/run/checkpoints', max_to_keep=3, save_interval_steps=100)
    ckpt.save(step, state, metadata={'data': train_input.state()}, process_local=train_input)
    state, metadata = ckpt.restore(abstract_like(state, state_shardings), process_local=train_input)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = 'state'
METADATA_ITEM = 'metadata'
PROCESS_LOCAL_ITEM = 'process_local'


class ProcessLocalState(Protocol):
    """Something each process saves for itself next to the shared state (e.g. its input
    pipeline's iterators). `save`/`restore` get a directory of this process alone."""

    def save(self, directory: str) -> None: ...

    def restore(self, directory: str) -> None: ...


def process_local_dirname() -> str:
    """This process's folder inside the process-local item."""
    return f'process_{jax.process_index()}-of-{jax.process_count()}'


class ProcessLocalHandler(ocp.CheckpointHandler):
    """Orbax handler: every process saves/restores its own `ProcessLocalState` into
    <item directory>/process_<i>-of-<n>/ (Orbax has created the item directory and synced
    the processes before `save` runs)."""

    def save(self, directory, args: 'ProcessLocalSave'):
        path = directory / process_local_dirname()
        path.mkdir(parents=True, exist_ok=True)
        args.item.save(os.fspath(path))

    def restore(self, directory, args: 'ProcessLocalRestore' = None):
        path = directory / process_local_dirname()
        if not path.exists():
            saved = (sorted(p.name for p in directory.iterdir() if p.name.startswith('process_'))
                     if directory.exists() else [])
            raise FileNotFoundError(
                f'{path}: no process-local state for {process_local_dirname()}; the checkpoint '
                f'holds {saved} (saved with another process count?)')
        args.item.restore(os.fspath(path))
        return args.item


@ocp.args.register_with_handler(ProcessLocalHandler, for_save=True)
@dataclasses.dataclass
class ProcessLocalSave(ocp.args.CheckpointArgs):
    item: ProcessLocalState


@ocp.args.register_with_handler(ProcessLocalHandler, for_restore=True)
@dataclasses.dataclass
class ProcessLocalRestore(ocp.args.CheckpointArgs):
    item: ProcessLocalState


def abstract_like(tree, shardings=None):
    """A tree of `jax.ShapeDtypeStruct` with the shapes/dtypes of `tree`.

    `shardings` (same structure, `jax.sharding.Sharding` leaves) sets where each leaf is
    restored; without it the leaves keep the sharding of `tree`'s arrays (if any).
    """
    def leaf(x, sharding=None):
        x = x if hasattr(x, 'shape') else np.asarray(x)
        sharding = sharding if sharding is not None else getattr(x, 'sharding', None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    if shardings is None:
        return jax.tree.map(leaf, tree)
    return jax.tree.map(leaf, tree, shardings)


class Checkpointer:
    """Save/restore a state pytree plus a JSON metadata dict with Orbax, keeping a few steps.

    Args:
      directory: where step folders live; created if missing. Made absolute (Orbax needs it).
      max_to_keep: number of most recent checkpoints kept (older ones are deleted).
      save_interval_steps: `save` only writes when `step % save_interval_steps == 0`
        (or when `force=True`).
      async_save: write in a background thread after copying arrays off the devices.
    """

    def __init__(self, directory: str, max_to_keep: int = 3, save_interval_steps: int = 1000,
                 async_save: bool = True):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f'Checkpointer: max_to_keep={max_to_keep}, expected >= 1.')
        if save_interval_steps < 1:
            raise ValueError(
                f'Checkpointer: save_interval_steps={save_interval_steps}, expected >= 1.')
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save,
            # The process-local item is written synchronously inside `save`: its directory
            # must exist by then (the arrays are still written in the background).
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_names=(STATE_ITEM, METADATA_ITEM, PROCESS_LOCAL_ITEM))

    def latest_step(self) -> int | None:
        """The newest finished checkpoint step, or None if the directory has none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, metadata: dict | None = None, force: bool = False,
             process_local: ProcessLocalState | None = None) -> bool:
        """Save `state` (pytree of jax/np arrays) and `metadata` (JSON-able) at `step`.

        `process_local`, when given, saves itself (`.save(directory)`) into this process's
        own folder of the step before this returns; every process must pass one then.
        Returns True if a save was started (False when the interval skips this step).
        Every process must call it (Orbax coordinates multi-host writes).
        """
        items = {
            STATE_ITEM: ocp.args.StandardSave(state),
            METADATA_ITEM: ocp.args.JsonSave(dict(metadata or {})),
        }
        if process_local is not None:
            items[PROCESS_LOCAL_ITEM] = ProcessLocalSave(process_local)
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state, step: int | None = None,
                process_local: ProcessLocalState | None = None) -> tuple[Any, dict]:
        """Restore (state, metadata) at `step` (default: latest) onto `abstract_state`'s shardings.

        `process_local`, when given, restores itself (`.restore(directory)`) from the folder
        this process saved at that step.
        Raises FileNotFoundError naming the directory when there is nothing to restore (or
        no process-local state where one is asked for), and ValueError naming the step when
        the saved tree does not match `abstract_state`.
        """
        step = self._resolve_step(step)
        if process_local is not None:
            where = os.path.join(self.directory, str(step), PROCESS_LOCAL_ITEM)
            if not os.path.isdir(where):
                raise FileNotFoundError(
                    f'Checkpoint {self.directory}/{step} has no {PROCESS_LOCAL_ITEM}/ item (the '
                    'per-process data position); it was saved without one and cannot be resumed '
                    'exactly.')
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.StandardRestore(abstract_state),
                    METADATA_ITEM: ocp.args.JsonRestore(),
                }),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'Checkpoint {self.directory}/{step}: saved state does not match the expected '
                f'structure/shapes ({type(e).__name__}: {e}).') from e
        if process_local is not None:  # its own errors say what does not match
            self._manager.restore(step, args=ocp.args.Composite(**{
                PROCESS_LOCAL_ITEM: ProcessLocalRestore(process_local)}))
        return restored[STATE_ITEM], dict(restored[METADATA_ITEM] or {})

    def restore_metadata(self, step: int | None = None) -> dict:
        """Only the JSON metadata of `step` (default: latest); cheap, reads no arrays."""
        step = self._resolve_step(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()}))
        return dict(restored[METADATA_ITEM] or {})

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f'No checkpoint to restore in {self.directory}.')
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(
                f'No checkpoint for step {step} in {self.directory}; available steps: {steps}.')
        return int(step)

    def wait_until_finished(self):
        """Block until any asynchronous save has been committed to disk."""
        self._manager.wait_until_finished()

    def close(self):
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _split_checkpoint_path(path: str) -> tuple[str, int | None]:
    """'<dir>' (latest step) or '<dir>/<step>' -> (manager directory, step or None)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        raise FileNotFoundError(f'init_from: checkpoint path {path} does not exist.')
    base = os.path.basename(path)
    if base.isdigit() and os.path.isdir(os.path.join(path, STATE_ITEM)):
        return os.path.dirname(path), int(base)
    return path, None


def restore_params(path: str, abstract_params, params_key: str = 'params'):
    """Restore only the parameters of a saved state, e.g. to finetune (task adaptation).

    Args:
      path: a Checkpointer directory (latest step is used) or one step folder in it.
      abstract_params: tree of `jax.ShapeDtypeStruct` (with the target shardings) that the
        saved `state.<params_key>` must match; optimizer state and step are not read.
      params_key: the field of the saved state holding the parameters.
    Returns:
      the parameter tree, laid out as `abstract_params` asks.
    """
    directory, step = _split_checkpoint_path(path)
    with ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
            item_names=(STATE_ITEM, METADATA_ITEM)) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f'init_from: no checkpoint steps in {directory}.')
        step = steps[-1] if step is None else step
        restore_args = jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape,
                                           dtype=x.dtype),
            abstract_params)
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.PyTreeRestore(
                        item={params_key: abstract_params},
                        restore_args={params_key: restore_args},
                        partial_restore=True),
                }),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'init_from: parameters in {directory}/{step} do not match the model '
                f'({type(e).__name__}: {e}).') from e
    return restored[STATE_ITEM][params_key]
