"""python -m vp_jax.main --config=experiments/t2v_base.py[:variant] [--config.a.b=v] [--workdir=DIR] [--mode=train|eval|compile]

The one entry point of the LM stack, the same on a laptop CPU and on a pod:

  --mode=train    prepare data (see `prepare_data`), then train with resume from --workdir
  --mode=eval     teacher-forced loss/accuracy per task of the latest checkpoint (or
                  --eval_step) on config.eval.split; results in <workdir>/eval/

With config.data.shards_dir '' or 'demo' and a config.demo section, the job is the embedded
demo's whole stage chain (vp_jax/pipeline.py): --mode=train builds the demo clips, trains the
tokenizers, pre-tokenizes, trains the LM in <workdir>/lm, evaluates and writes samples (each
stage cached); --mode=eval runs the generation harness on the trained LM
(<workdir>/eval/results.json, report.md).
  --mode=compile  lower + compile the train step of every length group on the configured
                  mesh and print per-device memory and FLOPs; nothing is trained or read

The workdir is --workdir, else config.workdir, else ~/vp_jax_runs/<config name>; it is
printed at start. Multi-host: on TPU pods and GPU clusters pass --distributed (JAX finds
its peers); elsewhere (e.g. several processes on 127.0.0.1) give --coordinator_address,
--num_processes and --process_id.
"""
from __future__ import annotations

import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'experiments/<name>.py[:variant]; fields overridable as --config.a.b=v.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (overrides config.workdir).')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'compile'], 'What to do.')
_EVAL_STEP = flags.DEFINE_integer('eval_step', None, '--mode=eval: checkpoint step (default: latest).')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'jax.distributed.initialize() with auto-detection.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Process count (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')


def prepare_data(config, workdir: str):
    """The stage before training: make sure config.data.shards_dir holds pre-tokenized shards.

    This is where a data-preparation pipeline plugs in (the embedded demo: build clips,
    train the tokenizers, pre-tokenize into <workdir>/shards); it returns the config to
    train with. Without one, it checks that the shards exist and says what to do if not.
    """
    from vp_jax.trainer import with_workdir

    shards_dir = with_workdir(config, workdir).data.shards_dir
    if not os.path.exists(os.path.join(shards_dir, 'spec.json')):
        raise FileNotFoundError(
            f'No pre-tokenized shards at {shards_dir} (config.data.shards_dir; "" means <workdir>/shards). '
            'Point --config.data.shards_dir at a directory with spec.json and TFRecord shards '
            '(written by data_pipelines).')
    return config


def _initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value:
        if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
            raise app.UsageError('--coordinator_address needs --num_processes and --process_id.')
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    elif _DISTRIBUTED.value:
        jax.distributed.initialize()


def run(config, workdir: str, mode: str, eval_step: int | None = None):
    """The body of main, callable from Python (tests, notebooks)."""
    from vp_jax import trainer

    if mode == 'compile':
        from vp_jax.aot_compile import compile_train_steps
        return compile_train_steps(config, workdir)
    from vp_jax import pipeline
    if pipeline.uses_demo(config):
        if eval_step is not None:
            raise ValueError('--eval_step: the demo job evaluates the LM it trained (<workdir>/lm, final step).')
        return pipeline.run(config, workdir, until='samples' if mode == 'train' else 'eval', only=mode == 'eval')
    config = prepare_data(config, workdir)
    if mode == 'eval':
        return trainer.evaluate_checkpoint(config, workdir, eval_step)
    return trainer.train(config, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    if _CONFIG.value is None:
        raise app.UsageError('--config=experiments/<name>.py[:variant] is required.')
    if not flags.FLAGS['verbosity'].present:
        # Orbax and SeqIO log every step of their work at INFO; progress lines say enough.
        absl_logging.set_verbosity(absl_logging.WARNING)
    _initialize_distributed()
    from vp_jax import config as config_lib
    from vp_jax.trainer import log

    config = _CONFIG.value
    workdir = _WORKDIR.value or config.get('workdir') or config_lib.default_workdir(
        config_flags.get_config_filename(flags.FLAGS['config']))
    workdir = os.path.abspath(os.path.expanduser(workdir))
    log(f'[main] mode={_MODE.value} workdir={workdir}')
    try:
        run(config, workdir, _MODE.value, _EVAL_STEP.value)
    except config_lib.ConfigError as e:
        raise SystemExit(str(e)) from None
    log(f'[main] workdir {workdir}')


if __name__ == '__main__':
    app.run(main)
