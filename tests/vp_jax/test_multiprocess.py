"""Two JAX processes on 127.0.0.1 (2 CPU devices each) train like one process fed both halves.

Each process reads its own part of the shards and feeds its rows of every global batch
through `jax.make_array_from_process_local_data`; Orbax writes one checkpoint together.
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
_WORKER = textwrap.dedent('''
    import json, os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
    import jax
    process_id, port, shards, workdir, out = sys.argv[1:]
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{{port}}', num_processes=2,
                               process_id=int(process_id))
    sys.path.insert(0, {tests_dir!r})
    from test_trainer import tiny_config
    from vp_jax import trainer
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    history = trainer.train(tiny_config(shards, num_steps={num_steps}, checkpoint_every_steps={num_steps}),
                            workdir)
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

    def restore(self, state):
        for part in self.parts:
            part.restore(state)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_losses_of_one_process_fed_both_halves(tmp_path, monkeypatch):
    shards = str(tmp_path / 'shards')
    write_synthetic_shards(shards, num_examples=32, num_shards=2)
    port, workdir = _free_port(), str(tmp_path / 'two_processes')
    script = _WORKER.format(tests_dir=os.path.dirname(os.path.abspath(__file__)), num_steps=NUM_STEPS)
    workers = [subprocess.Popen(
        [sys.executable, '-c', script, str(i), str(port), shards, workdir, str(tmp_path / f'history_{i}.json')],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert '[train] step 4/4' in outputs[0] and '[train] step' not in outputs[1]  # lines from process 0 only
    histories = [json.loads((tmp_path / f'history_{i}.json').read_text()) for i in range(2)]
    losses = [{step: scalars['train/loss'] for step, scalars in h.items()} for h in histories]
    assert losses[0] == losses[1] and len(losses[0]) == NUM_STEPS

    monkeypatch.setattr(input_pipeline, 'TrainInputOfOneProcess', input_pipeline.TrainInput, raising=False)
    monkeypatch.setattr(input_pipeline, 'TrainInput', BothProcessesInput)
    single = trainer.train(tiny_config(shards, num_steps=NUM_STEPS, checkpoint_every_steps=NUM_STEPS),
                           str(tmp_path / 'one_process'))
    for step in range(1, NUM_STEPS + 1):
        np.testing.assert_allclose(histories[0][str(step)]['train/loss'], single[step]['train/loss'], rtol=1e-5)
    with Checkpointer(os.path.join(workdir, 'checkpoints')) as checkpoints:
        assert checkpoints.latest_step() == NUM_STEPS
        assert checkpoints.restore_metadata()['data']['process_count'] == 2
