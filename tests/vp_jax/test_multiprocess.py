"""Two JAX processes on 127.0.0.1 (2 CPU devices each) train like one process fed both halves,
and resume together after both are killed.

Each process reads its own part of the shards and feeds its rows of every global batch
through `jax.make_array_from_process_local_data`; Orbax writes one checkpoint together, with
each process's input iterator states in its own process-local folder.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines import input_pipeline
from data_pipelines.testing import write_synthetic_shards
from vp_jax import trainer
from vp_jax.checkpointing import Checkpointer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_trainer import tiny_config  # noqa: E402  (tests/ has no packages)

NUM_STEPS = 4
CHECKPOINT_EVERY = 2
_WORKER = textwrap.dedent('''
    import json, os, signal, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
    import jax
    process_id, port, shards, workdir, out, kill_at = sys.argv[1:]
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{{port}}', num_processes=2,
                               process_id=int(process_id))
    sys.path.insert(0, {tests_dir!r})
    from test_trainer import tiny_config
    from vp_jax import trainer
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)

    def on_step(step, metrics):
        if step == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)

    history = trainer.train(tiny_config(shards, num_steps={num_steps}, checkpoint_every_steps={every}),
                            workdir, on_step=on_step)
    with open(out, 'w') as f:
        json.dump({{str(k): v for k, v in history.items()}}, f)
''')


class BothProcessesInput:
    """TrainInput as process 0 and process 1 of 2 would build it, rows concatenated."""

    def __init__(self, data_config, global_batch_size, seed, split='train', total_steps=None):
        self.parts = [input_pipeline.TrainInputOfOneProcess(
            data_config, global_batch_size, seed, split, process_index=i, process_count=2,
            total_steps=total_steps) for i in range(2)]
        first = self.parts[0]
        self.vocab, self.geometry, self.groups = first.vocab, first.geometry, first.groups
        self.text_embedding_dim = first.text_embedding_dim

    def next_batch(self):
        (group, rows0), (group1, rows1) = (part.next_batch() for part in self.parts)
        assert group == group1
        return group, {key: np.concatenate([rows0[key], rows1[key]]) for key in rows0}

    def state(self):
        return self.parts[0].state()

    def save(self, directory):  # the checkpoint's process-local item: both processes' iterators
        for i, part in enumerate(self.parts):
            part.save(os.path.join(directory, f'process_{i}'))

    def restore(self, directory):
        for i, part in enumerate(self.parts):
            part.restore(os.path.join(directory, f'process_{i}'))

    def close(self):
        for part in self.parts:
            part.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _train_two_processes(shards, workdir, kill_at=0):
    """Runs the tiny job as processes 0 and 1 of 2 -> (return codes, outputs, histories)."""
    script = _WORKER.format(tests_dir=os.path.dirname(os.path.abspath(__file__)), num_steps=NUM_STEPS,
                            every=CHECKPOINT_EVERY)
    port, histories = _free_port(), [f'{workdir}_history_{i}.json' for i in range(2)]
    workers = [subprocess.Popen(
        [sys.executable, '-c', script, str(i), str(port), shards, workdir, histories[i], str(kill_at)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    codes = [worker.returncode for worker in workers]
    loaded = []
    for history in histories:
        if os.path.exists(history):
            with open(history) as f:
                loaded.append(json.load(f))
        else:
            loaded.append(None)
    return codes, outputs, loaded


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    """Shards and an uninterrupted two-process run of them."""
    root = tmp_path_factory.mktemp('multiprocess')
    shards = str(root / 'shards')
    write_synthetic_shards(shards, num_examples=32, num_shards=2)
    workdir = str(root / 'two_processes')
    codes, outputs, histories = _train_two_processes(shards, workdir)
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
    return shards, workdir, outputs, histories


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_process_fed_both_halves(two_processes, tmp_path, monkeypatch):
    shards, workdir, outputs, histories = two_processes
    assert '[train] step 4/4' in outputs[0] and '[train] step' not in outputs[1]  # lines from process 0 only
    losses = [{step: scalars['train/loss'] for step, scalars in h.items()} for h in histories]
    assert losses[0] == losses[1] and len(losses[0]) == NUM_STEPS

    monkeypatch.setattr(input_pipeline, 'TrainInputOfOneProcess', input_pipeline.TrainInput, raising=False)
    monkeypatch.setattr(input_pipeline, 'TrainInput', BothProcessesInput)
    single = trainer.train(tiny_config(shards, num_steps=NUM_STEPS, checkpoint_every_steps=CHECKPOINT_EVERY),
                           str(tmp_path / 'one_process'))
    for step in range(1, NUM_STEPS + 1):
        np.testing.assert_allclose(histories[0][str(step)]['train/loss'], single[step]['train/loss'], rtol=1e-5)
    with Checkpointer(os.path.join(workdir, 'checkpoints')) as checkpoints:
        assert checkpoints.latest_step() == NUM_STEPS
        assert checkpoints.restore_metadata()['data']['process_count'] == 2
    local = os.listdir(os.path.join(workdir, 'checkpoints', str(NUM_STEPS), 'process_local'))
    assert {'process_0-of-2', 'process_1-of-2'} <= set(local)


@pytest.mark.slow
def test_two_processes_killed_after_a_checkpoint_resume_with_the_uninterrupted_losses(two_processes, tmp_path):
    shards, _, _, uninterrupted = two_processes
    workdir = str(tmp_path / 'killed')
    codes, outputs, _ = _train_two_processes(shards, workdir, kill_at=CHECKPOINT_EVERY + 1)
    assert codes == [-9, -9], outputs[0][-3000:]
    with Checkpointer(os.path.join(workdir, 'checkpoints')) as checkpoints:
        assert checkpoints.all_steps() == [CHECKPOINT_EVERY]
    codes, outputs, resumed = _train_two_processes(shards, workdir)
    assert codes == [0, 0], outputs[0][-3000:]
    assert f'resumed from {workdir}/checkpoints at step {CHECKPOINT_EVERY}' in outputs[0]
    for history in resumed:
        assert sorted(int(step) for step in history) == list(range(CHECKPOINT_EVERY + 1, NUM_STEPS + 1))
        for step, scalars in history.items():
            assert scalars['train/loss'] == uninterrupted[0][step]['train/loss']
