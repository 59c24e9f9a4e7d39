"""--mode=compile: lower and compile the train step of every length group, without training.

Why: before a long run on a big mesh, see that the step compiles for the configured mesh and
rules, how much memory each device needs and how many FLOPs a step costs (MaxText's AOT
check). Nothing is initialised or read: the state and the batch are abstract
(`jax.ShapeDtypeStruct` with shardings), so an 8B model "fits" in this process.

Where the shapes come from: the shard spec when config.data.shards_dir holds one, else
config.compile.vocabulary (Vocabulary.to_dict()) and config.compile.geometry
({video_latent_shape, audio_shape, text_length, text_embedding_dim}), through the same AGD
length grouping as training (data_pipelines.mixtures).

FLOPs. The analytic count (vp_jax/flops.py) is the one to trust: XLA's cost analysis counts a
while-loop body once, so with scan_layers the compiler figure misses all but one layer.

Devices. By default the local devices. To rehearse a mesh you do not hold on CPU, fake the
devices: XLA_FLAGS=--xla_force_host_platform_device_count=256 gives 256 CPU devices, so
sharding, divisibility and per-device *CPU* memory are checked; the numbers are the CPU
compiler's, not a TPU's. config.compile.topology (e.g. 'v5p:8x8x4') compiles for real TPU
devices described by `jax.experimental.topologies`; that needs libtpu installed and is not
available on a CPU-only machine (a clear error says so).
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from vp_jax import config as config_lib
from vp_jax import flops as flops_lib
from vp_jax import trainer
from vp_jax.tasks import Geometry, get_task, sequence_lengths
from vp_jax.train_step import batch_spec, compile_train_step, jit_train_step, make_train_step
from vp_jax.vocabulary import Vocabulary


def topology_devices(topology: str):
    """Devices of a TPU topology such as 'v5p:8x8x4' for AOT compilation (needs libtpu)."""
    from jax.experimental import topologies

    try:
        # As MaxText does: 'v5p:8x8x4' names the chip and the chip grid; 4 chips per host.
        return topologies.get_topology_desc(topology_name=topology, platform='tpu', chip_config_name='default',
                                            chips_per_host_bounds=(2, 2, 1), num_slices=1).devices
    except Exception as e:  # The exact failure depends on the missing TPU runtime.
        raise RuntimeError(
            f'config.compile.topology={topology!r}: cannot describe this TPU topology here '
            f'({type(e).__name__}: {e}). AOT compilation for TPU needs libtpu installed; on a CPU machine '
            'rehearse the mesh with XLA_FLAGS=--xla_force_host_platform_device_count=<devices> instead.') from e


def _gib(num_bytes: float) -> str:
    return f'{num_bytes / 2**30:.3f} GiB' if num_bytes >= 2**28 else f'{num_bytes / 2**20:.1f} MiB'


def describe_config_data(config: ml_collections.ConfigDict) -> trainer.DataDescription:
    """Vocabulary/geometry/groups from config.compile (when there are no shards)."""
    compile_cfg = config.get('compile') or {}
    if not compile_cfg.get('vocabulary') or not compile_cfg.get('geometry'):
        raise FileNotFoundError(
            f'--mode=compile: no shard spec in config.data.shards_dir={config.data.shards_dir!r} and no '
            'config.compile.vocabulary / config.compile.geometry to take the shapes from.')
    vocab = Vocabulary.from_dict(compile_cfg.vocabulary.to_dict(), source='config.compile.vocabulary')
    g = compile_cfg.geometry
    geometry = Geometry(video_latent_shape=tuple(g.video_latent_shape), audio_shape=tuple(g.audio_shape),
                        text_length=int(g.text_length))
    groups = trainer.length_groups(config.data, vocab, geometry)
    return trainer.DataDescription(vocab, geometry, int(g.get('text_embedding_dim', 0)), groups)


def _group_flops(job: trainer.Job, group, data: trainer.DataDescription, batch_size: int) -> float:
    """Analytic step FLOPs of a group: its tasks' (prefix, length) weighted by their rates."""
    total = 0.0
    for task, rate in zip(group.tasks, group.task_rates):
        prefix, _ = sequence_lengths(get_task(task), data.geometry, data.vocab)
        total += rate * flops_lib.train_step_flops(job.model_config, batch_size, group.length,
                                                   min(prefix, group.length))
    return total


def compile_train_steps(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Compiles the step for each length group; prints and returns per-device memory and FLOPs."""
    config = trainer.with_workdir(config, workdir)
    topology = (config.get('compile') or {}).get('topology', '')
    devices = topology_devices(topology) if topology else jax.devices()
    has_shards = os.path.exists(os.path.join(config.data.shards_dir, 'spec.json'))
    config_lib.validate_config(config, len(devices), check_shards=has_shards)
    data = trainer.describe_shards(config.data) if has_shards else describe_config_data(config)
    config = trainer.resolve_for_data(config, data)
    partitioner = trainer.make_partitioner(config, devices=devices)
    job = trainer.build_job(config, partitioner)
    step = jit_train_step(partitioner, make_train_step(job.model, job.optimizer, job.step_config),
                          job.state_shardings)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(job.abstract_state.params))
    state_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(job.abstract_state))
    trainer.log(f'[compile] {len(devices)} {devices[0].platform} devices, mesh {dict(partitioner.mesh.shape)}, '
                f'{num_params:,} parameters, train state {_gib(state_bytes)} in total, '
                f'batch {config.train.batch_size} x microbatches {config.train.microbatches}')
    reports = []
    for group in data.groups:
        abstract_batch = batch_spec(partitioner, config.train.batch_size, group.length,
                                    data.geometry.text_length, data.text_embedding_dim)
        compiled = compile_train_step(step, job.abstract_state, abstract_batch, partitioner)
        memory = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
        report = {
            'group': group.name, 'length': group.length, 'tasks': list(group.tasks),
            'argument_bytes': int(getattr(memory, 'argument_size_in_bytes', 0)),
            'output_bytes': int(getattr(memory, 'output_size_in_bytes', 0)),
            'temp_bytes': int(getattr(memory, 'temp_size_in_bytes', 0)),
            'alias_bytes': int(getattr(memory, 'alias_size_in_bytes', 0)),
            'compiler_flops_per_device': float(cost.get('flops', float('nan'))),
            'analytic_flops_per_step': _group_flops(job, group, data, config.train.batch_size),
        }
        # Donated state aliases its outputs, so the peak is arguments + temporaries + new outputs.
        report['peak_bytes_per_device'] = (report['argument_bytes'] + report['temp_bytes']
                                           + report['output_bytes'] - report['alias_bytes'])
        reports.append(report)
        trainer.log(
            f'[compile] {group.name} (length {group.length}, tasks {", ".join(group.tasks)}): per device '
            f'arguments {_gib(report["argument_bytes"])}, temporaries {_gib(report["temp_bytes"])}, '
            f'peak ~{_gib(report["peak_bytes_per_device"])}; compiler FLOPs/device '
            f'{report["compiler_flops_per_device"]:.4g}, analytic FLOPs/step {report["analytic_flops_per_step"]:.4g} '
            f'({report["analytic_flops_per_step"] / len(devices):.4g} per device)')
    return reports
