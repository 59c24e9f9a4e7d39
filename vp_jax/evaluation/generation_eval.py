"""The generation harness: a trained LM generates for held-out demo clips, the scorers judge it.

    python -m vp_jax.evaluation.generation_eval --lm_workdir=<workdir>/lm --clips=<workdir>/demo \
        --out_dir=<workdir>/eval [--tasks=t2v,i2v,video_to_audio] [--num_clips=32]

(`python -m vp_jax.main --config=... --mode=eval` runs it as the pipeline's `eval` stage.)

Per task of `HarnessSettings.tasks`, each held-out clip (test split of the demo clip store:
video uint8 [T, H, W, 3], audio float32 [samples], caption, ground truth) becomes the task's
conditioning (its caption for t2v, its first frame for i2v, its masked pixels for
inpainting, its video for video_to_audio, ...), the LM samples the output with the task's
recipe (vp_jax/generation.py), and `scoring.score_clip` scores it against the clip's truth.
The ceiling of every score is the same score on the real clip encoded then decoded by the
tokenizers (what a perfect LM could reach with them); the task 'reconstruction' holds the
tokenizers' own PSNR / SI-SNR. Teacher-forced loss/accuracy per task (vp_jax/trainer.py's
eval on config.eval.split) join as metrics 'loss' and 'accuracy', each counting its scored
target tokens (`count`) and their examples (`examples`).

Outputs in out_dir (vp_jax/evaluation/results.py): results.json, report.md + samples.png
(contact sheet of generated clips), tensorboard/, and clips/ (every generated and ceiling
clip as mp4/wav + sidecar, re-scorable with `python -m vp_jax.evaluation.evaluate_clips`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np

from vp_jax.evaluation import evaluate_clips, results
from vp_jax.evaluation.digit_classifier import DigitClassifier, TrainingSettings
from vp_jax.evaluation.evaluate_clips import ClipRecord

# What each task's recipe reads from a held-out clip (vp_jax.generate.run_chain state keys).
TASK_INPUTS = {
    'unconditional': (), 't2v': ('prompts',), 't2i': ('prompts',), 'i2v': ('images',),
    'continuation': ('videos',), 'inpainting': ('videos',), 'outpainting': ('videos',),
    'stylization': ('prompts', 'videos'), 'audio_to_video': ('audio',), 'video_to_audio': ('videos',),
    'av_continuation': ('videos', 'audio'),
}
# Tasks whose scores compare against the original clip (first frame, masked region, path).
NEEDS_REFERENCE = ('i2v', 'continuation', 'inpainting', 'outpainting')
AUDIO_OUTPUT = ('video_to_audio', 'av_continuation')
AUDIO_ONLY_OUTPUT = ('video_to_audio',)


@dataclasses.dataclass(frozen=True)
class HarnessSettings:
    tasks: tuple[str, ...] = ('t2v', 'i2v', 'continuation', 'inpainting', 'outpainting', 'video_to_audio')
    num_clips: int = 32  # held-out clips per task
    split: str = 'test'
    batch_size: int = 16  # clips sampled at once
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance_scale: float = 1.0
    classifier_clips: int = TrainingSettings.num_clips
    feature_network: str = 'demo'  # 'demo' (trained here on real clips) or 'none'
    teacher_forced: bool = True
    num_sample_clips: int = 8  # generated clips on the report's contact sheet

    @classmethod
    def from_config(cls, config) -> 'HarnessSettings':
        values = dict(config)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f'config.demo.harness: unknown fields {unknown}; expected '
                             f'{[f.name for f in dataclasses.fields(cls)]}.')
        if 'tasks' in values:
            values['tasks'] = tuple(values['tasks'])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        errors = [f'tasks: unknown task {t!r}; expected one of {sorted(TASK_INPUTS)}'
                  for t in self.tasks if t not in TASK_INPUTS]
        for name in ('num_clips', 'batch_size', 'classifier_clips'):
            if getattr(self, name) < 1:
                errors.append(f'{name}={getattr(self, name)!r}: expected >= 1')
        if self.feature_network not in ('demo', 'none'):
            errors.append(f"feature_network={self.feature_network!r}: expected 'demo' or 'none'")
        if errors:
            raise ValueError('harness settings: ' + '; '.join(errors))


def sampling_options(config):
    """vp_jax.sampling.SamplingOptions from any config/settings with the sampling fields."""
    from vp_jax.sampling import SamplingOptions

    get = config.get if hasattr(config, 'get') else lambda k, d: getattr(config, k, d)
    return SamplingOptions(temperature=float(get('temperature', 1.0)), top_k=int(get('top_k', 0)),
                           top_p=float(get('top_p', 1.0)), guidance_scale=float(get('guidance_scale', 1.0)))


@dataclasses.dataclass
class LoadedGenerator:
    generator: object  # vp_jax.generation.Generator
    clip: object  # data_pipelines.media_decode.ClipGeometry
    lm: object  # vp_jax.generate.LoadedLM


def load_generator(lm_workdir: str, step: int | None = None, tokenizers=None) -> LoadedGenerator:
    """The LM of a trainer workdir with the tokenizers its config.json names (or `tokenizers`,
    a data_pipelines.pretokenize.Tokenizers)."""
    from data_pipelines import structure
    from vp_jax.generate import check_tokenizer_ids, load_lm, load_tokenizers
    from vp_jax.generation import Generator, clip_geometry_for
    from vp_jax.sampling import Sampler

    lm = load_lm(lm_workdir, step)
    tokenizers = tokenizers or load_tokenizers(lm.config)
    for note in check_tokenizer_ids(tokenizers, lm.spec):
        print(f'[generation_eval] WARNING: {note}', flush=True)
    fps = float((lm.spec.extra or {}).get('fps', 8.0))
    clip = clip_geometry_for(lm.dataset.geometry, tokenizers, fps)
    depth_name = (lm.spec.tokenizers or {}).get('depth')
    depth_fn, _ = structure.load_depth_fn(None if depth_name == structure.SUBSTITUTE_DEPTH_NAME else depth_name)
    generator = Generator(Sampler(lm.model, lm.partitioner), lm.params, lm.dataset.vocab, lm.dataset.geometry,
                          tokenizers, clip, depth_fn, float(lm.spec.extra.get('mask_fraction', 0.5)))
    return LoadedGenerator(generator, clip, lm)


def _chunks(n: int, size: int):
    """Index arrays of `size` rows covering range(n); the last one padded by repeating row 0
    so every chunk has one shape (one compiled sampling program per task)."""
    for start in range(0, n, size):
        rows = np.arange(start, min(start + size, n))
        yield rows, np.concatenate([rows, np.zeros(size - len(rows), int)]) if len(rows) < size else rows


def generate_task(loaded: LoadedGenerator, task: str, clips: Sequence, settings: HarnessSettings,
                  options) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """Samples `task` for every clip. -> (videos uint8 [N, T, H, W, 3] or None,
    audio float32 [N, samples] or None, seconds)."""
    import jax

    from vp_jax.generate import run_chain

    videos = np.stack([c.video for c in clips])
    inputs = {'prompts': [c.caption for c in clips], 'videos': videos, 'images': videos[:, 0],
              'audio': np.stack([c.audio for c in clips]) if clips[0].audio is not None else None}
    out_video, out_audio, start = [], [], time.perf_counter()
    size = min(settings.batch_size, len(clips))
    for index, (rows, padded) in enumerate(_chunks(len(clips), size)):
        state = {k: (np.asarray(inputs[k])[padded] if k != 'prompts' else [inputs[k][i] for i in padded])
                 for k in TASK_INPUTS[task]}
        state['num_samples'] = size
        rng = jax.random.fold_in(jax.random.key(settings.seed), index)
        result, _ = run_chain(loaded.generator, [task], state, rng, options)
        if result.video is not None:
            out_video.append(result.video[:len(rows)])
        if result.audio is not None and task in AUDIO_OUTPUT:
            out_audio.append(result.audio[:len(rows)])
    return (np.concatenate(out_video) if out_video else None,
            np.concatenate(out_audio) if out_audio else None, time.perf_counter() - start)


@dataclasses.dataclass
class Reconstructions:
    """The held-out clips through the tokenizers: the ceiling's inputs."""
    video: np.ndarray  # uint8 [N, T, H, W, 3]
    first_frame: np.ndarray  # uint8 [N, 1, H, W, 3] (the image tokens alone, as t2i makes)
    audio: np.ndarray | None  # float32 [N, samples]


def reconstruct(loaded: LoadedGenerator, clips: Sequence) -> Reconstructions:
    tokenizers, generator = loaded.generator.tokenizers, loaded.generator
    videos = np.stack([c.video for c in clips])
    video = tokenizers.video.decode(generator.encode_video(videos))
    first = tokenizers.video.decode(generator.encode_video(videos[:, :1]))
    audio = None
    if tokenizers.audio is not None and clips[0].audio is not None:
        wave = tokenizers.audio.decode(generator.encode_audio(np.stack([c.audio for c in clips])))
        n = loaded.clip.audio_samples
        audio = np.pad(wave, [(0, 0), (0, max(0, n - wave.shape[1]))])[:, :n].astype(np.float32)
    return Reconstructions(video, first, audio)


def _given_frames(task: str, generator) -> int:
    """Pixel frames of a clip that `task`'s prefix holds (scored clips skip them)."""
    if task in ('continuation', 'av_continuation'):
        return generator.head_frames
    return 1 if task == 'i2v' else 0


def _records(task: str, kind: str, clips: Sequence, videos, audios, loaded: LoadedGenerator) -> list[ClipRecord]:
    generator, records = loaded.generator, []
    for i, clip in enumerate(clips):
        records.append(ClipRecord(
            name=f'{task}_{kind}_{i:03d}', task=task, kind=kind, truth=clip.metadata['truth'],
            video=None if videos is None else videos[i], audio=None if audios is None else audios[i],
            reference_video=clip.video if task in NEEDS_REFERENCE + ('reconstruction',) else None,
            reference_audio=clip.audio if task == 'reconstruction' else None, caption=clip.caption,
            fps=loaded.clip.fps, sample_rate=loaded.clip.sample_rate,
            mask_fraction=generator.mask_fraction, mask_align=generator.align,
            given_frames=_given_frames(task, generator)))
    return records


def ceiling_records(task: str, clips: Sequence, recon: Reconstructions, loaded: LoadedGenerator) -> list[ClipRecord]:
    """The real clips as a perfect LM would give them back: what the tokenizers keep."""
    originals = np.stack([c.video for c in clips])
    if task == 't2i':
        video = recon.first_frame
    elif task == 'video_to_audio':
        video = originals  # the video is given; only the sound is generated
    else:
        video = recon.video
    audio = None
    if task in AUDIO_OUTPUT:
        audio = recon.audio
    elif task == 'audio_to_video':
        audio = np.stack([c.audio for c in clips])
    return _records(task, 'real', clips, video, audio, loaded)


TEACHER_FORCED_METRICS = ('loss', 'accuracy', 'conditioning_gain')


def teacher_forced_entries(lm_workdir: str, step: int | None = None) -> dict[str, dict[str, results.MetricEntry]]:
    """Per task 'loss', 'accuracy' and 'conditioning_gain' of checkpoint `step` (default: the
    latest) on config.eval.split, each with `count` = its scored target tokens and `examples`
    = the examples they came from. Reuses what the trainer's evaluation wrote for that step."""
    from vp_jax import config as config_lib
    from vp_jax import trainer

    config = config_lib.read_resolved_config(lm_workdir)
    step = _latest_step(lm_workdir) if step is None else step
    metrics = trainer.read_eval_results(lm_workdir, step, config.eval.split) if step is not None else None
    if metrics is None:
        metrics = trainer.evaluate_checkpoint(config, lm_workdir, step)
    tasks: dict[str, dict[str, results.MetricEntry]] = {}
    for key, value in metrics.items():
        parts = key.split('/')
        if len(parts) == 3 and parts[0] == 'task' and parts[2] in TEACHER_FORCED_METRICS:
            prefix = f'task/{parts[1]}/'
            tasks.setdefault(parts[1], {})[parts[2]] = results.MetricEntry(
                float(value), count=int(round(metrics[prefix + 'output_tokens'])),
                examples=int(round(metrics[prefix + 'examples'])),
                higher_is_better=results.METRICS[parts[2]][0])
    return tasks


def evaluate_lm(lm_workdir: str, out_dir: str, settings: HarnessSettings, clips: Sequence,
                cache_dir: str, step: int | None = None, tokenizers=None
                ) -> dict[str, dict[str, results.MetricEntry]]:
    """Generates, scores and writes results.json / report.md / TensorBoard / clips to out_dir.

    clips: held-out data_pipelines.clip_sources.Clip objects (metadata['truth'] set).
    cache_dir: where the digit classifier and feature network are kept between runs.
    tokenizers: overrides the tokenizer checkpoints the LM's config.json names.
    """
    settings.check()
    if not clips:
        raise ValueError('evaluate_lm: no held-out clips to evaluate on.')
    missing = [c.clip_id for c in clips if 'truth' not in (c.metadata or {})]
    if missing:
        raise ValueError(f'evaluate_lm: clips {missing[:3]} carry no ground truth (metadata["truth"]); '
                         'the harness scores demo clips only.')
    loaded = load_generator(lm_workdir, step, tokenizers)
    options = sampling_options(settings)
    training = TrainingSettings(num_clips=settings.classifier_clips)
    classifier = DigitClassifier.load_or_train(DigitClassifier.cache_file(cache_dir, training), training)
    network = evaluate_clips.make_feature_network(settings.feature_network, cache_dir)
    recon = reconstruct(loaded, clips)
    records = _records('reconstruction', 'generated', clips, recon.video, recon.audio, loaded)
    timings = {}
    for task in settings.tasks:
        videos, audios, seconds = generate_task(loaded, task, clips, settings, options)
        timings[task] = round(seconds, 1)
        print(f'[generation_eval] {task}: {len(clips)} clips sampled in {seconds:.1f} s', flush=True)
        records += _records(task, 'generated', clips, videos, audios, loaded)
        records += ceiling_records(task, clips, recon, loaded)
    tasks, problems = evaluate_clips.evaluate_records(records, classifier, network)
    for task in AUDIO_ONLY_OUTPUT:  # its video is the given clip: a video distance says nothing
        tasks.get(task, {}).pop('frechet_distance', None)
    if settings.teacher_forced:
        for task, entries in teacher_forced_entries(lm_workdir).items():
            tasks.setdefault(task, {}).update(entries)
    checkpoint_step = loaded.lm.step if loaded.lm.step is not None else _latest_step(lm_workdir)
    info = {'lm_workdir': os.path.abspath(lm_workdir), 'step': checkpoint_step, 'split': settings.split,
            'clips_per_task': len(clips), 'sampling': dataclasses.asdict(options),
            'sampling_seconds': timings, 'skipped': problems}
    _write_clips(os.path.join(out_dir, 'clips'), records)
    generated = [r for r in records if r.kind == 'generated' and r.task != 'reconstruction']
    report = evaluate_clips.write_outputs(out_dir, tasks, generated, info, step=checkpoint_step or 0,
                                          num_samples=settings.num_sample_clips)
    print(results.markdown_report(tasks, info={'results': os.path.join(out_dir, 'results.json')}), flush=True)
    print(f'[generation_eval] wrote {os.path.join(out_dir, "results.json")} and {report}', flush=True)
    return tasks


def _latest_step(lm_workdir: str) -> int | None:
    from vp_jax.checkpointing import Checkpointer

    with Checkpointer(os.path.join(lm_workdir, 'checkpoints'), async_save=False) as checkpointer:
        return checkpointer.latest_step()


def _write_clips(directory: str, records: Sequence[ClipRecord]) -> None:
    """Every scored clip as files + sidecar (evaluate_clips' format), for re-scoring and viewing."""
    for r in records:
        if r.video is None:
            continue
        evaluate_clips.write_clip(directory, r.name, r.task, r.kind, r.video, r.truth, audio=r.audio,
                                  reference_video=r.reference_video, reference_audio=r.reference_audio,
                                  caption=r.caption, fps=r.fps, sample_rate=r.sample_rate,
                                  mask_fraction=r.mask_fraction, mask_align=r.mask_align,
                                  given_frames=r.given_frames)


def main(argv=None) -> None:
    from absl import app, flags

    defaults = HarnessSettings()
    flags.DEFINE_string('lm_workdir', None, 'trained LM workdir (config.json + checkpoints/)', required=True)
    flags.DEFINE_string('clips', None, 'demo clip store (the pipeline\'s <workdir>/demo)', required=True)
    flags.DEFINE_string('out_dir', None, 'where results go (default <lm_workdir>/../eval)')
    flags.DEFINE_string('cache_dir', evaluate_clips.DEFAULT_CACHE_DIR, 'digit classifier / feature net cache')
    flags.DEFINE_list('tasks', list(defaults.tasks), 'tasks to generate and score')
    flags.DEFINE_integer('num_clips', defaults.num_clips, 'held-out clips per task')
    flags.DEFINE_string('split', defaults.split, 'split of the clip store to condition on')
    flags.DEFINE_integer('batch_size', defaults.batch_size, 'clips sampled at once')
    flags.DEFINE_float('temperature', defaults.temperature, '0 = greedy')
    flags.DEFINE_integer('top_k', defaults.top_k, '0 = off')
    flags.DEFINE_float('guidance_scale', defaults.guidance_scale, 'classifier-free guidance (1 = off)')
    flags.DEFINE_enum('feature_network', defaults.feature_network, ['demo', 'none'], 'Frechet distance features')
    flags.DEFINE_integer('classifier_clips', defaults.classifier_clips, 'real clips the digit classifier trains on')
    flags.DEFINE_bool('teacher_forced', True, 'also teacher-forced loss/accuracy per task')
    flags.DEFINE_integer('step', None, 'LM checkpoint step (default: latest)')

    def run(_):
        from vp_jax.pipeline import read_demo_clips

        f = flags.FLAGS
        settings = HarnessSettings(tasks=tuple(f.tasks), num_clips=f.num_clips, split=f.split,
                                   batch_size=f.batch_size, temperature=f.temperature, top_k=f.top_k,
                                   guidance_scale=f.guidance_scale, feature_network=f.feature_network,
                                   classifier_clips=f.classifier_clips, teacher_forced=f.teacher_forced)
        out_dir = f.out_dir or os.path.join(os.path.dirname(os.path.abspath(f.lm_workdir)), 'eval')
        evaluate_lm(f.lm_workdir, out_dir, settings, read_demo_clips(f.clips, f.split, f.num_clips),
                    f.cache_dir, f.step)

    app.run(run, argv=argv)


if __name__ == '__main__':
    main()
