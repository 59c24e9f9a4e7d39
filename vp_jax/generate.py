"""Generate videos and sound from a trained LM workdir: the command line over vp_jax/generation.py.

    python -m vp_jax.generate --workdir=~/vp_jax_runs/t2v_base --task=t2v \
        --prompt="the digit three moves left quickly over the coffee photo" --out=/tmp/samples \
        --video_tokenizer=<magvit2 checkpoints> --audio_tokenizer=<soundstream checkpoints> \
        --text_tokenizer=<captions.model>

Tasks (--task): unconditional, t2v, t2i, i2v (--image), continuation (--video), long_video
(--video or --prompt, --rounds), inpainting / outpainting (--video), stylization (--prompt +
--video), audio_to_video (--audio), video_to_audio (--video), av_continuation (--video with
sound). A comma list chains tasks, each reading the previous one's output video/sound:
--task=t2i,i2v ; --task=i2v,stylization ; --task=t2v,video_to_audio.

Inputs are media files (any format PyAV decodes; resampled to the clip's fps, resized and
centre-cropped like the training clips) or text; the tokenizers run inside. Tokenizers come
from checkpoint paths (--video_tokenizer, --audio_tokenizer, --text_tokenizer, --t5), or from
config.tokenizers.{video,audio,text,t5} in the workdir's config, or from a factory
--tokenizers=module:function returning a data_pipelines.pretokenize.Tokenizers.

Outputs in --out: <name>_<i>.mp4 (H.264, with the generated or given sound as AAC), .gif,
.wav when there is sound, .png for images, contact_sheet.png (conditioning clips first when
the task has them), tokens.npz and summary.json (prompts, options, seed, timings, seam
figures of long videos).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
import warnings

import jax
import numpy as np
from absl import app, flags

from data_pipelines import structure
from data_pipelines.media_decode import ClipGeometry, decode_image, decode_video_clips
from data_pipelines.pretokenize import TokenizerPaths, Tokenizers
from data_pipelines.schema import ShardSpec
from data_pipelines.seqio_tasks import ShardDataset
from vp_jax import config as config_lib
from vp_jax import media
from vp_jax.checkpointing import restore_params
from vp_jax.generation import GenerationResult, Generator, clip_geometry_for
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig
from vp_jax.partitioning import Partitioner, resolve_mesh_shape
from vp_jax.progress import Progress
from vp_jax.sampling import Sampler, SamplingOptions
from vp_jax.tasks import TASKS_BY_NAME
from vp_jax.train_step import init_batch

CHECKPOINT_DIR = 'checkpoints'  # vp_jax/trainer.py writes <workdir>/checkpoints
TASK_CHOICES = tuple(TASKS_BY_NAME) + ('long_video',)
NEEDS = {  # what each recipe reads from the running state
    'unconditional': (), 't2v': ('prompts',), 't2i': ('prompts',), 'i2v': ('images',),
    'continuation': ('videos',), 'long_video': ('videos',), 'inpainting': ('videos',),
    'outpainting': ('videos',), 'stylization': ('prompts', 'videos'), 'video_to_audio': ('videos',),
    'audio_to_video': ('audio',), 'av_continuation': ('videos', 'audio'),
}


@dataclasses.dataclass
class LoadedLM:
    config: object  # the workdir's resolved ml_collections config
    model: Transformer
    params: object
    partitioner: Partitioner
    dataset: ShardDataset
    spec: ShardSpec
    step: int | None


def _partitioner(config) -> Partitioner:
    """The training mesh when it fits this machine's devices, else pure data parallelism."""
    shape = config_lib.mesh_shape(config)
    try:
        resolve_mesh_shape(shape, jax.device_count())
    except ValueError as e:
        print(f'[generate] the training mesh {shape} does not fit {jax.device_count()} devices ({e}); '
              'sampling data-parallel with replicated parameters.')
        shape = {'data': -1, 'fsdp': 1, 'tensor': 1}
    return Partitioner(shape, config.mesh.logical_axis_rules,
                       max_replicated_fraction=config.mesh.get('max_replicated_fraction', 0.1))


def load_lm(workdir: str, step: int | None = None) -> LoadedLM:
    """Reads <workdir>/config.json, the shard spec it names and the LM parameters (sharded)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    config = config_lib.read_resolved_config(workdir)
    shards_dir = config.data.shards_dir or os.path.join(workdir, 'shards')
    dataset = ShardDataset.open(shards_dir)
    model_config = TransformerConfig.from_config(config.model)
    if model_config.vocab_size < dataset.vocab.size:
        raise ValueError(f'{workdir}/config.json: model.vocab_size={model_config.vocab_size} is smaller than the '
                         f'vocabulary of {shards_dir} ({dataset.vocab.size} ids).')
    model = Transformer(model_config)
    partitioner = _partitioner(config)
    init = lambda rng: model.init({'params': rng}, init_batch(text_embedding_dim=model_config.text_embedding_dim))[
        'params']
    abstract, _ = partitioner.abstract_sharded(init, jax.random.key(0))
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    path = directory if step is None else os.path.join(directory, str(step))
    params = restore_params(path, abstract)
    return LoadedLM(config, model, params, partitioner, dataset, dataset.spec, step)


def load_tokenizers(config, factory: str = '', video: str = '', audio: str = '', text: str = '',
                    t5: str = '') -> Tokenizers:
    """Tokenizers from a 'module:function' factory, else from checkpoint paths (flags, then config)."""
    if factory:
        module, _, name = factory.partition(':')
        if not module or not name:
            raise ValueError(f"--tokenizers={factory!r}: expected 'module:function'.")
        tokenizers = getattr(importlib.import_module(module), name)()
        if not isinstance(tokenizers, Tokenizers):
            raise ValueError(f'--tokenizers={factory!r} returned {type(tokenizers).__name__}, not Tokenizers.')
        return tokenizers
    saved = config.get('tokenizers') or {}
    paths = {k: v or saved.get(k, '') for k, v in dict(video=video, audio=audio, text=text, t5=t5).items()}
    if not paths['video']:
        raise ValueError('no video tokenizer: pass --video_tokenizer=<magvit2 checkpoint dir> (or set '
                         'config.tokenizers.video in the workdir config, or --tokenizers=module:function).')
    return TokenizerPaths(**{k: v or None for k, v in paths.items()})()


def check_tokenizer_ids(tokenizers: Tokenizers, spec: ShardSpec) -> list[str]:
    """Warnings where a tokenizer is not the one the LM's shards were made with."""
    found = {'video': tokenizers.video, 'audio': tokenizers.audio}
    notes = []
    for kind, tok in found.items():
        want = spec.tokenizers.get(kind) if isinstance(spec.tokenizers, dict) else None
        have = getattr(tok, 'checkpoint_id', None)
        if tok is not None and want and have != want:
            notes.append(f'{kind} tokenizer {have!r} differs from {want!r} that made the shards: '
                         'samples will decode to noise unless the two are the same weights.')
    return notes


def read_inputs(clip: ClipGeometry, images=(), videos=(), audios=()) -> dict[str, np.ndarray]:
    """Media files -> the arrays the recipes read, at the clip geometry."""
    state = {}
    if images:
        state['images'] = np.stack([decode_image(p, clip)[1].video[0] for p in images])
    if videos:
        clips = [decode_video_clips(p, dataclasses.replace(clip, max_clips_per_file=1))[1][0] for p in videos]
        state['videos'] = np.stack([c.video for c in clips])
        if all(c.audio is not None for c in clips):
            state['audio'] = np.stack([c.audio for c in clips])
    if audios:
        from vp_tokenizers.soundstream import audio_io
        waves = [audio_io.read_audio(p, clip.sample_rate) for p in audios]
        n = clip.audio_samples
        state['audio'] = np.stack([np.pad(w[:n], (0, max(0, n - w.size))) for w in waves]).astype(np.float32)
    return state


def _repeat(state: dict, num_samples: int) -> dict:
    """Each input row num_samples times (rows of one input stay together)."""
    return {k: (np.repeat(v, num_samples, axis=0) if isinstance(v, np.ndarray) else
                [x for x in v for _ in range(num_samples)]) for k, v in state.items()}


def run_chain(generator: Generator, chain: list[str], state: dict, rng, options: SamplingOptions,
              rounds: int = 1, negative_prompts=None, progress: Progress | None = None
              ) -> tuple[GenerationResult, list[dict]]:
    """Runs the tasks in order; each result's video/sound feeds the next task. -> (last, timings)."""
    state, timings, result = dict(state), [], None
    for index, task in enumerate(chain):
        missing = [need for need in NEEDS[task] if need not in state]
        if missing:
            raise ValueError(f'task {task!r} needs {missing}: give --prompt / --image / --video / --audio, '
                             f'or chain a task that makes them first.')
        start = time.perf_counter()
        key = jax.random.fold_in(rng, index)
        if task == 'long_video':
            result = generator.long_video(state['videos'], rounds, key, options)
        elif task in ('t2v', 't2i'):
            fn = generator.text_to_video if task == 't2v' else generator.text_to_image
            result = fn(state['prompts'], key, options, negative_prompts)
        elif task == 'stylization':
            result = generator.stylization(state['prompts'], state['videos'], key, options, negative_prompts)
        elif task == 'unconditional':
            result = generator.unconditional(state.get('num_samples', 1), key, options)
        elif task == 'i2v':
            result = generator.image_to_video(state['images'], key, options)
        elif task == 'audio_to_video':
            result = generator.audio_to_video(state['audio'], key, options)
        elif task == 'av_continuation':
            result = generator.av_continuation(state['videos'], state['audio'], key, options)
        else:
            result = getattr(generator, task)(state['videos'], key, options)
        seconds = time.perf_counter() - start
        tokens = sum(int(np.prod(v.shape)) for v in result.tokens.values())
        timings.append({'task': task, 'seconds': seconds, 'tokens': tokens, 'tokens_per_s': tokens / seconds})
        if result.video is not None:
            state['videos'] = result.video
            state['images'] = result.video[:, 0]
        if result.audio is not None:
            state['audio'] = result.audio
        elif task not in ('video_to_audio',):
            state.pop('audio', None)  # the old sound no longer matches the new picture
        if progress is not None:
            progress.update(index + 1, {'seconds': seconds}, items=tokens)
    return result, timings


def write_outputs(out_dir: str, name: str, result: GenerationResult, fps: float, sample_rate: int) -> list[str]:
    """mp4 + gif (+ wav) per clip, png per image, contact_sheet.png; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    video, audio = result.video, result.audio
    for i in range(len(video)):
        stem = os.path.join(out_dir, f'{name}_{i:02d}')
        sound = None if audio is None else audio[i]
        if video.shape[1] == 1:
            media.write_png(stem + '.png', video[i, 0])
            written.append(stem + '.png')
        else:
            media.write_mp4(stem + '.mp4', video[i], fps, sound, sample_rate)
            media.write_gif(stem + '.gif', video[i], fps)
            written += [stem + '.mp4', stem + '.gif']
        if sound is not None:
            media.write_wav(stem + '.wav', sound, sample_rate)
            written.append(stem + '.wav')
    rows, labels = [video], [f'{name} {i}' for i in range(len(video))]
    if result.conditioning is not None and result.conditioning.shape[1:] == video.shape[1:]:
        rows.insert(0, result.conditioning)
        labels = [f'input {i}' for i in range(len(video))] + labels
    sheet = os.path.join(out_dir, 'contact_sheet.png')
    media.write_png(sheet, media.contact_sheet(np.concatenate(rows), frames_per_row=9, labels=labels))
    np.savez(os.path.join(out_dir, 'tokens.npz'), **result.tokens)
    return written + [sheet, os.path.join(out_dir, 'tokens.npz')]


def define_flags() -> None:
    """Defines the command-line flags, once. Not at import: the main job imports this module's
    functions in a process whose own flags would clash. A --workdir flag defined already (by
    vp_jax.main, in a test process importing both) is reused: it names the LM workdir too."""
    if 'task' in flags.FLAGS:
        return
    if 'workdir' not in flags.FLAGS:
        flags.DEFINE_string('workdir', None, 'Trained LM workdir (config.json + checkpoints/).')
    flags.DEFINE_string('task', 't2v', f'Task or comma-separated chain of: {", ".join(TASK_CHOICES)}.')
    flags.DEFINE_multi_string('prompt', [], 'Text prompt(s).')
    flags.DEFINE_multi_string('negative_prompt', [], 'Negative prompt(s) for guidance (default: null).')
    flags.DEFINE_multi_string('image', [], 'Image file(s) for i2v.')
    flags.DEFINE_multi_string('video', [], 'Video file(s) (first clip used).')
    flags.DEFINE_multi_string('audio', [], 'Audio file(s) (wav, mp3, or a video with sound).')
    flags.DEFINE_string('out', None, 'Output directory.')
    flags.DEFINE_integer('num_samples', 1, 'Samples per input.')
    flags.DEFINE_integer('seed', 0, 'Sampling seed.')
    flags.DEFINE_float('temperature', 1.0, '0 = greedy.')
    flags.DEFINE_integer('top_k', 0, '0 = off.')
    flags.DEFINE_float('top_p', 1.0, '1 = off.')
    flags.DEFINE_float('guidance_scale', 1.0, 'Classifier-free guidance scale (1 = off).')
    flags.DEFINE_float('repetition_penalty', 0.0, 'Logit penalty on recent ids.')
    flags.DEFINE_integer('repetition_window', 0, 'Recent outputs the penalty looks at.')
    flags.DEFINE_integer('rounds', 3, 'long_video: continuation rounds (~1 s each).')
    flags.DEFINE_float('fps', 8.0, 'Frame rate of the clips the tokenizer was trained on.')
    flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
    flags.DEFINE_bool('add_audio', False, 'Chain video_to_audio when the result has no sound.')
    flags.DEFINE_string('tokenizers', '', "Factory 'module:function' returning Tokenizers.")
    flags.DEFINE_string('video_tokenizer', '', 'MAGVIT-v2 checkpoint directory.')
    flags.DEFINE_string('audio_tokenizer', '', 'SoundStream checkpoint directory.')
    flags.DEFINE_string('text_tokenizer', '', 'Caption sentencepiece .model file.')
    flags.DEFINE_string('t5', '', 'T5 encoder checkpoint directory.')


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if not FLAGS.workdir or not FLAGS.out:
        raise app.UsageError('--workdir and --out are required.')
    chain = [t.strip() for t in FLAGS.task.split(',') if t.strip()]
    unknown = [t for t in chain if t not in TASK_CHOICES]
    if unknown or not chain:
        raise app.UsageError(f'--task={FLAGS.task!r}: unknown {unknown}; choose from {", ".join(TASK_CHOICES)}.')
    lm = load_lm(FLAGS.workdir, FLAGS.step)
    tokenizers = load_tokenizers(lm.config, FLAGS.tokenizers, FLAGS.video_tokenizer, FLAGS.audio_tokenizer,
                                 FLAGS.text_tokenizer, FLAGS.t5)
    for note in check_tokenizer_ids(tokenizers, lm.spec):
        warnings.warn(note)
        print(f'[generate] WARNING: {note}')
    clip = clip_geometry_for(lm.dataset.geometry, tokenizers, FLAGS.fps)
    depth_name = (lm.spec.tokenizers or {}).get('depth')
    depth_fn, _ = structure.load_depth_fn(None if depth_name == structure.SUBSTITUTE_DEPTH_NAME else depth_name)
    generator = Generator(Sampler(lm.model, lm.partitioner), lm.params, lm.dataset.vocab, lm.dataset.geometry,
                          tokenizers, clip, depth_fn, float(lm.spec.extra.get('mask_fraction', 0.5)))
    options = SamplingOptions(FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.guidance_scale,
                              FLAGS.repetition_penalty, FLAGS.repetition_window)
    state = read_inputs(clip, FLAGS.image, FLAGS.video, FLAGS.audio)
    if FLAGS.prompt:
        state['prompts'] = list(FLAGS.prompt)
    if chain[0] == 'long_video' and 'videos' not in state and 'prompts' in state:
        chain.insert(0, 't2v')  # a long video from text starts with a text-to-video clip
    if FLAGS.add_audio and 'audio' not in NEEDS[chain[-1]] and chain[-1] != 'video_to_audio':
        chain.append('video_to_audio')
    lengths = {len(v) for k, v in state.items()}
    if len(lengths) > 1:
        raise app.UsageError(f'inputs have different counts {({k: len(v) for k, v in state.items()})}; '
                             'give as many prompts as images/videos/sounds (or one of each).')
    state = _repeat(state, FLAGS.num_samples)
    state['num_samples'] = FLAGS.num_samples
    progress = Progress(len(chain), os.path.join(FLAGS.out, 'logs'), 'generate', log_every_steps=1,
                        items_name='tokens')
    progress.update(0, {})
    print(f'[generate] {" -> ".join(chain)}: {FLAGS.num_samples} sample(s) per input, clip {clip.num_frames} frames '
          f'{clip.height}x{clip.width} @ {clip.fps:g} fps, {options}')
    result, timings = run_chain(generator, chain, state, jax.random.key(FLAGS.seed), options, FLAGS.rounds,
                                FLAGS.negative_prompt or None, progress)
    progress.close()
    name = '_'.join(chain)
    written = write_outputs(FLAGS.out, name, result, clip.fps, clip.sample_rate)
    summary = {'workdir': os.path.abspath(FLAGS.workdir), 'chain': chain, 'prompts': FLAGS.prompt,
               'negative_prompts': FLAGS.negative_prompt,
               'inputs': {'image': FLAGS.image, 'video': FLAGS.video, 'audio': FLAGS.audio},
               'seed': FLAGS.seed, 'options': dataclasses.asdict(options), 'timings': timings,
               'metrics': result.metrics, 'files': written}
    with open(os.path.join(FLAGS.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    if result.metrics:
        print(f'[generate] metrics {json.dumps(result.metrics)}')
    print(f'[generate] wrote {len(written)} files to {FLAGS.out}')


if __name__ == '__main__':
    define_flags()
    app.run(main)
