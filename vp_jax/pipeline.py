"""The embedded-demo main job as a chain of cached stages, each also runnable alone.

    python -m vp_jax.pipeline --config=experiments/t2v_base.py:quick --workdir=/tmp/run [--stage=shards]

`python -m vp_jax.main` runs the same chain when config.data.shards_dir is '' or 'demo' and
the config has a `demo` section. Stages, in order, each in its own folder of the workdir
(vp_jax/stages.py: skipped while its fingerprint matches and its outputs check out,
resumed when interrupted, rebuilt when a config field it reads changes):

    demo               demo clips (pixels + sound + ground truth) as a raw clip store
    video_tokenizer    MAGVIT-v2 trained on demo-geometry clips     checkpoints/
    audio_tokenizer    SoundStream trained on demo-like sound        checkpoints/
    caption_tokenizer  sentencepiece model of the train captions     captions.model
    shards             pre-tokenized TFRecord shards + spec.json (what the LM trains on)
    lm                 the LM (vp_jax/trainer.py)                    checkpoints/, logs/, config.json
    eval               the harness (vp_jax/evaluation/generation_eval.py): results.json,
                       report.md, samples.png, TensorBoard
    samples            mp4 (with sound) / gif / wav for held-out test prompts

`--stage=X` runs X after its upstream stages (cached ones are skipped). The LM folder is a
normal trainer workdir: `python -m vp_jax.generate --workdir=<workdir>/lm ...` samples from
it with no tokenizer flags (its config.json names the tokenizer checkpoints).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import ml_collections
import numpy as np

from vp_jax import stages

STAGE_NAMES = ('demo', 'video_tokenizer', 'audio_tokenizer', 'caption_tokenizer', 'shards', 'lm', 'eval',
               'samples')
CAPTION_MODEL = 'captions.model'
SCORERS = 'scorers'  # <workdir>/scorers: the harness's scorer cache
CHECKPOINTS = 'checkpoints'
# Config sections the LM stage depends on (the demo/tokenizer sections reach it through the
# fingerprint of the shards stage).
LM_SECTIONS = ('seed', 'init_from', 'model', 'data', 'optimizer', 'train', 'eval', 'mesh')


def uses_demo(config: ml_collections.ConfigDict) -> bool:
    """True when the job builds its own data: a `demo` section and shards_dir '' or 'demo'."""
    return 'demo' in config and config.data.shards_dir in ('', 'demo')


@dataclasses.dataclass(frozen=True)
class StageDirs:
    """Where the stages of a workdir keep the outputs other stages read."""
    workdir: str

    def stage(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    @property
    def demo(self) -> str:
        return self.stage('demo')

    @property
    def shards(self) -> str:
        return self.stage('shards')

    @property
    def lm(self) -> str:
        return self.stage('lm')

    @property
    def video_checkpoints(self) -> str:
        return os.path.join(self.stage('video_tokenizer'), CHECKPOINTS)

    @property
    def audio_checkpoints(self) -> str:
        return os.path.join(self.stage('audio_tokenizer'), CHECKPOINTS)

    @property
    def caption_model(self) -> str:
        return os.path.join(self.stage('caption_tokenizer'), CAPTION_MODEL)


def _log(message: str) -> None:
    print(message, flush=True)


def _checkpoint_at(directory: str, step: int) -> bool:
    """True when `directory` holds a finished Orbax checkpoint of exactly `step`."""
    from vp_jax.checkpointing import Checkpointer

    if not os.path.isdir(directory):
        return False
    with Checkpointer(directory, async_save=False) as checkpointer:
        return checkpointer.latest_step() == step


def check_demo_config(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
    """Fails before any work on fields the stages cannot use (the demo's and the LM's),
    naming field and value. `num_devices` enables the LM's mesh/batch checks."""
    demo, errors = config.demo, []
    for split, count in dict(demo.num_clips).items():
        if split not in ('train', 'validation', 'test'):
            errors.append(f"config.demo.num_clips: unknown split {split!r}; expected train/validation/test.")
        if not isinstance(count, int) or count < 1:
            errors.append(f'config.demo.num_clips.{split}={count!r}: expected an integer >= 1.')
    for split in ('train', config.eval.split, demo.harness.split):
        if split not in demo.num_clips:
            errors.append(f'config.demo.num_clips has no {split!r} split, which the job reads '
                          f'(train data, config.eval.split, config.demo.harness.split).')
    if demo.clips_per_shard < 1:
        errors.append(f'config.demo.clips_per_shard={demo.clips_per_shard!r}: expected >= 1.')
    if not isinstance(demo.handwritings_per_digit, int) or demo.handwritings_per_digit < 0:
        errors.append(f'config.demo.handwritings_per_digit={demo.handwritings_per_digit!r}: expected an integer '
                      '>= 0 (0 = every image of the digit).')
    geometry = {'num_frames': demo.num_frames, 'height': demo.size, 'width': demo.size, 'fps': demo.fps}
    video_data = demo.video_tokenizer.data
    for field, value in geometry.items():
        if video_data[field] != value:
            errors.append(f'config.demo.video_tokenizer.data.{field}={video_data[field]!r} but the demo clips '
                          f'have {field}={value!r} (config.demo).')
    from vp_tokenizers.text.caption_tokenizer import MODEL_TYPES
    if demo.caption_tokenizer.get('model_type', 'bpe') not in MODEL_TYPES:
        errors.append(f'config.demo.caption_tokenizer.model_type={demo.caption_tokenizer.model_type!r}: '
                      f'expected one of {MODEL_TYPES}.')
    if demo.audio_tokenizer.sample_rate != demo.sample_rate:
        errors.append(f'config.demo.audio_tokenizer.sample_rate={demo.audio_tokenizer.sample_rate} but the demo '
                      f'clips are at config.demo.sample_rate={demo.sample_rate}.')
    from vp_jax import config as config_lib
    from vp_jax import tasks as tasks_lib
    from vp_jax.evaluation.generation_eval import HarnessSettings

    for task in list(config.data.tasks) + list(demo.harness.tasks):
        if task in tasks_lib.TASKS_BY_NAME:
            needed = {'text_tokens' if f == 'text' else f for f in tasks_lib.get_task(task).fields}
            missing = sorted(needed - set(demo.shards.fields))
            if missing:
                errors.append(f'config.demo.shards.fields={list(demo.shards.fields)} lacks {missing}, which task '
                              f'{task!r} (config.data.tasks / config.demo.harness.tasks) needs.')

    try:
        HarnessSettings.from_config(demo.harness)
    except (ValueError, TypeError) as e:
        errors.append(f'config.demo.harness: {e}')
    # The LM's own checks, before hours of data preparation (its shards do not exist yet).
    errors += config_lib.config_errors(lm_config(config, StageDirs('/')), num_devices, check_shards=False)
    if errors:
        raise config_lib.ConfigError(errors)


# ---------------------------------------------------------------------------- stage bodies
def build_demo_clips(demo: ml_collections.ConfigDict, directory: str) -> None:
    """Demo clips of every split as a raw clip store (data_pipelines.clip_store), resumable."""
    import math

    from data_pipelines import beam_pipeline, clip_sources, clip_store

    counts = {split: int(n) for split, n in demo.num_clips.items()}
    units = clip_sources.demo_units(counts, demo.seed, demo.size, demo.num_frames, demo.fps, demo.sample_rate,
                                    demo.handwritings_per_digit)
    num_shards = {split: max(1, math.ceil(n / demo.clips_per_shard)) for split, n in counts.items()}
    result = beam_pipeline.run_pipeline(units, clip_store.RawClipEncoder(), directory, num_shards, name='demo')
    clip_store.write_store_spec(directory, result.splits, {
        'num_frames': demo.num_frames, 'height': demo.size, 'width': demo.size, 'fps': demo.fps,
        'sample_rate': demo.sample_rate})


def read_demo_clips(directory: str, split: str, limit: int | None = None) -> list:
    """data_pipelines.clip_sources.Clip objects of one split of a demo clip store, in id order."""
    from data_pipelines import clip_store

    clips = []
    for unit in clip_store.store_units(directory):
        if unit.split == split:
            produced, report = unit.produce()
            if report['status'] != 'ok':
                raise ValueError(f"{directory}: clip shard {unit.path} is unreadable: {report.get('reason')}")
            clips += produced
    if not clips:
        raise ValueError(f'{directory}: the demo clip store has no {split!r} clips.')
    clips.sort(key=lambda c: c.clip_id)
    return clips[:limit]


def _demo_store_valid(directory: str) -> bool:
    from data_pipelines import clip_store

    try:
        return all(os.path.exists(u.path) for u in clip_store.store_units(directory))
    except (FileNotFoundError, ValueError):
        return False


def train_video_tokenizer(tokenizer_config: ml_collections.ConfigDict, directory: str) -> None:
    from vp_tokenizers.magvit2 import train as magvit2_train

    magvit2_train.train(tokenizer_config, directory)


def train_audio_tokenizer(tokenizer_config: ml_collections.ConfigDict, directory: str) -> None:
    from vp_tokenizers.soundstream import train as soundstream_train

    soundstream_train.train(tokenizer_config, directory)


def train_caption_tokenizer(demo_dir: str, tokenizer_config: ml_collections.ConfigDict, directory: str) -> None:
    """A sentencepiece model of the train split's captions (what the LM reads as text)."""
    from vp_tokenizers.text.caption_tokenizer import CaptionTokenizer

    captions = [clip.caption for clip in read_demo_clips(demo_dir, 'train')]
    tokenizer = CaptionTokenizer.train(captions, tokenizer_config.vocab_size, os.path.join(directory, CAPTION_MODEL),
                                       model_type=tokenizer_config.get('model_type', 'bpe'))
    lengths = tokenizer.count_tokens(captions)
    _log(f'[caption_tokenizer] {tokenizer.vocab_size} pieces from {len(captions)} captions; '
         f'captions take {min(lengths)}-{max(lengths)} tokens with EOS')


def build_shards(dirs: StageDirs, shards_config: ml_collections.ConfigDict, fps: float, directory: str) -> None:
    """Pre-tokenizes the demo clip store with the trained tokenizers (data_pipelines.pretokenize)."""
    from data_pipelines import beam_pipeline, clip_store, ingest
    from data_pipelines.pretokenize import TokenEncoder, TokenizerPaths, write_spec

    units = clip_store.store_units(dirs.demo)
    num_shards = {}
    for unit in units:
        num_shards[unit.split] = num_shards.get(unit.split, 0) + 1
    encoder = TokenEncoder(TokenizerPaths(dirs.video_checkpoints, dirs.audio_checkpoints, dirs.caption_model),
                           text_length=shards_config.text_length, fields=tuple(shards_config.fields),
                           mask_fraction=shards_config.mask_fraction, batch_size=shards_config.batch_size)
    result = beam_pipeline.run_pipeline(units, encoder, directory, num_shards, name='shards')
    write_spec(directory, encoder, result, extra={'source': 'demo', 'clips': dirs.demo, 'fps': fps})
    ingest.write_report(directory, result, {'source': 'demo'})


def lm_config(config: ml_collections.ConfigDict, dirs: StageDirs) -> ml_collections.ConfigDict:
    """The trainer's config: shards of this workdir, tokenizer paths recorded for sampling."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.shards_dir = dirs.shards
    config.workdir = dirs.lm
    config.tokenizers = ml_collections.ConfigDict(dict(
        video=dirs.video_checkpoints, audio=dirs.audio_checkpoints, text=dirs.caption_model, t5=''))
    return config


def train_lm(config: ml_collections.ConfigDict, dirs: StageDirs, directory: str) -> None:
    from vp_jax import trainer

    trainer.train(lm_config(config, dirs), directory)


def write_samples(dirs: StageDirs, samples: ml_collections.ConfigDict, directory: str) -> None:
    """For held-out test captions: each chain of config.demo.samples.chains, media files out."""
    import jax

    from vp_jax.evaluation import generation_eval
    from vp_jax.generate import run_chain, write_outputs

    loaded = generation_eval.load_generator(dirs.lm)
    clips = read_demo_clips(dirs.demo, samples.split, samples.num_prompts)
    options = generation_eval.sampling_options(samples)
    for index, chain in enumerate(samples.chains):
        tasks = [t.strip() for t in chain.split(',') if t.strip()]
        state = {'prompts': [c.caption for c in clips], 'videos': np.stack([c.video for c in clips]),
                 'images': np.stack([c.video[0] for c in clips])}
        result, timings = run_chain(loaded.generator, tasks, state, jax.random.key(samples.seed + index), options)
        out = os.path.join(directory, '_'.join(tasks))
        written = write_outputs(out, '_'.join(tasks), result, loaded.clip.fps, loaded.clip.sample_rate)
        with open(os.path.join(out, 'prompts.txt'), 'w') as f:
            f.write('\n'.join(state['prompts']) + '\n')
        seconds = sum(t['seconds'] for t in timings)
        _log(f'[samples] {" -> ".join(tasks)}: {len(written)} files in {out} ({seconds:.1f} s sampling)')


# ---------------------------------------------------------------------------- the chain
def make_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, stages.Stage]:
    """Every stage of the demo job for `workdir`, fingerprints chained in order."""
    demo, dirs = config.demo, StageDirs(workdir)
    from data_pipelines.demo.clips import VERSION as demo_version
    geometry = {k: demo[k] for k in ('num_clips', 'seed', 'size', 'num_frames', 'fps', 'sample_rate',
                                     'clips_per_shard', 'handwritings_per_digit')}
    geometry['clips_version'] = demo_version  # a new look of the clips rebuilds every stage
    made: dict[str, stages.Stage] = {}

    def add(name: str, inputs: dict, run: Callable[[str], None], is_valid: Callable[[str], bool]):
        made[name] = stages.Stage(name, inputs, run, is_valid)

    add('demo', geometry, lambda d: build_demo_clips(demo, d), _demo_store_valid)
    # The tokenizers train on clips they generate themselves, not on the demo stage's store.
    add('video_tokenizer', {'config': demo.video_tokenizer, 'clips_version': demo_version},
        lambda d: train_video_tokenizer(demo.video_tokenizer, d),
        lambda d: _checkpoint_at(os.path.join(d, CHECKPOINTS), demo.video_tokenizer.train.num_steps))
    add('audio_tokenizer', {'config': demo.audio_tokenizer, 'clips_version': demo_version},
        lambda d: train_audio_tokenizer(demo.audio_tokenizer, d),
        lambda d: _checkpoint_at(os.path.join(d, CHECKPOINTS), demo.audio_tokenizer.train.num_steps))
    add('caption_tokenizer', {'config': demo.caption_tokenizer, 'demo': made['demo'].fingerprint},
        lambda d: train_caption_tokenizer(dirs.demo, demo.caption_tokenizer, d),
        lambda d: os.path.exists(os.path.join(d, CAPTION_MODEL)))
    add('shards', {'config': demo.shards, **{n: made[n].fingerprint for n in
                                             ('demo', 'video_tokenizer', 'audio_tokenizer', 'caption_tokenizer')}},
        lambda d: build_shards(dirs, demo.shards, demo.fps, d),
        lambda d: os.path.exists(os.path.join(d, 'spec.json')))
    # Any LM field change retrains from scratch: e.g. num_steps shapes the whole lr schedule.
    add('lm', {'config': {k: config[k] for k in LM_SECTIONS}, 'shards': made['shards'].fingerprint},
        lambda d: train_lm(config, dirs, d),
        lambda d: _checkpoint_at(os.path.join(d, CHECKPOINTS), config.train.num_steps))
    add('eval', {'config': demo.harness, 'lm': made['lm'].fingerprint},
        lambda d: _run_harness(config, dirs, d),
        lambda d: os.path.exists(os.path.join(d, 'results.json')))
    add('samples', {'config': demo.samples, 'lm': made['lm'].fingerprint},
        lambda d: write_samples(dirs, demo.samples, d),
        lambda d: any(name != stages.STARTED_FILE for name in os.listdir(d)))
    return made


def _run_harness(config: ml_collections.ConfigDict, dirs: StageDirs, directory: str) -> None:
    from vp_jax.evaluation import generation_eval

    settings = generation_eval.HarnessSettings.from_config(config.demo.harness)
    clips = read_demo_clips(dirs.demo, settings.split, settings.num_clips)
    # The scorers (digit classifier, feature network) outlive a harness config change: they
    # are retrained only when their own settings change (load_or_train checks them).
    generation_eval.evaluate_lm(dirs.lm, directory, settings, clips, cache_dir=os.path.join(dirs.workdir, SCORERS))


def is_cached(stage: stages.Stage, workdir: str) -> bool:
    """True when `stage` finished in `workdir` with its current fingerprint and valid outputs."""
    directory = os.path.join(workdir, stage.name)
    try:
        with open(os.path.join(directory, stages.DONE_FILE)) as f:
            done = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return done.get('fingerprint') == stage.fingerprint and stage.is_valid(directory)


def run(config: ml_collections.ConfigDict, workdir: str, until: str = 'samples',
        only: bool = False) -> dict[str, str]:
    """Runs the stages up to and including `until`; with only=True just `until`, after
    checking that every upstream stage is cached. Returns {stage: directory}."""
    if until not in STAGE_NAMES:
        raise ValueError(f'stage {until!r}: expected one of {", ".join(STAGE_NAMES)}.')
    import jax

    check_demo_config(config, jax.device_count())
    workdir = os.path.abspath(os.path.expanduser(workdir))
    made = make_stages(config, workdir)
    wanted = STAGE_NAMES[:STAGE_NAMES.index(until) + 1]
    if only:
        stale = [name for name in wanted[:-1] if not is_cached(made[name], workdir)]
        if stale:
            raise FileNotFoundError(f'stage {until!r} needs the stages {stale} of {workdir} to be built first '
                                    f'(run the job without --only / --mode=train).')
        wanted = (until,)
    _log(f'[pipeline] workdir {workdir}: stages {", ".join(wanted)}')
    return {name: stages.run_stage(made[name], workdir, log=_log) for name in wanted}


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f'Unexpected arguments: {argv[1:]}')
    config, f = flags.FLAGS.config, flags.FLAGS
    if 'demo' not in config:
        raise SystemExit('the config has no `demo` section (see experiments/t2v_base.py).')
    from ml_collections import config_flags

    from vp_jax import config as config_lib

    workdir = f.workdir or config.get('workdir') or config_lib.default_workdir(
        config_flags.get_config_filename(f['config']))
    run(config, workdir, f.stage, f.only)
    _log(f'[pipeline] workdir {os.path.abspath(os.path.expanduser(workdir))}')


if __name__ == '__main__':
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file('config', None, 'experiments/<name>.py[:variant] with a demo section.')
    flags.DEFINE_string('workdir', None, 'Run directory (default: config.workdir or ~/vp_jax_runs/<config>).')
    flags.DEFINE_enum('stage', 'samples', STAGE_NAMES, 'Run this stage (after its upstream stages).')
    flags.DEFINE_bool('only', False, 'Run only --stage (its upstream outputs must be there already).')
    flags.mark_flag_as_required('config')
    app.run(main)
