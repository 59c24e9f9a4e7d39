"""Task recipes: media and text in, tokens through the LM, media out.

`Generator` joins the sampler (vp_jax/sampling.py), the task registry (vp_jax/tasks.py) and
the tokenizers (`data_pipelines.pretokenize.Tokenizers`: MAGVIT-v2 video, SoundStream audio,
caption tokenizer or T5). Each recipe encodes its inputs exactly as pre-tokenization does
(same masks, same structure clips), samples the task's output span, and decodes it:

    gen = Generator(sampler, params, vocab, geometry, tokenizers, clip)
    result = gen.text_to_video(["the digit three moves left"], jax.random.key(0), options)
    result.video       uint8 [batch, 17, 32, 32, 3]
    result.audio       float32 [batch, samples] or None

Shapes: videos uint8 [batch, frames, height, width, 3] at the clip geometry (`clip`), images
uint8 [batch, height, width, 3], audio float32 [batch, samples] at the audio tokenizer's rate.

Guidance. With `options.guidance_scale != 1` a task whose prefix holds text runs the null
prompt (text dropped, as trained with text dropout) or the given negative prompts as the
unconditional branch; tasks without text in the prefix sample without guidance.

Long video (`long_video`): VideoPoet's zero-shot extension. Each round re-encodes the last
`head_frames` pixel frames (9 = the first 3 latent frames of a 17-frame clip, ~1.1 s at
8 fps) as the continuation prefix and generates the remaining latent frames (8 new pixel
frames, 1 s). The tokenizer is causal, so the head latents depend only on those frames and
the frames after them in the encoded clip (repeats of the last one) change nothing. Seams
are measured: the mean absolute pixel step from the last kept frame to the first new frame,
against the mean step between consecutive frames inside the generated rounds.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from data_pipelines import masks, structure
from data_pipelines.media_decode import ClipGeometry
from data_pipelines.pretokenize import Tokenizers
from vp_jax import tasks as tasks_lib
from vp_jax.features import TEXT_EMBEDDINGS
from vp_jax.sampling import Sampler, SamplingOptions, prefix_batch
from vp_jax.vocabulary import Vocabulary


@dataclasses.dataclass
class GenerationResult:
    """What one recipe produced. `tokens` holds the raw sampled ids per output source."""
    video: np.ndarray | None = None  # uint8 [batch, frames, height, width, 3]
    audio: np.ndarray | None = None  # float32 [batch, samples]
    tokens: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    conditioning: np.ndarray | None = None  # uint8 [batch, frames, H, W, 3]: masked / structure clip shown


def clip_geometry_for(geometry: tasks_lib.Geometry, tokenizers: Tokenizers, fps: float = 8.0) -> ClipGeometry:
    """Pixel geometry whose tokens have `geometry`'s latent shape ((5, 8, 8) -> 17 x 32 x 32)."""
    config = tokenizers.video.config
    t, h, w = geometry.video_latent_shape
    sample_rate = tokenizers.audio.sample_rate if tokenizers.audio is not None else 16000
    return ClipGeometry(num_frames=1 + config.temporal_factor * (t - 1), fps=fps,
                        height=h * config.spatial_factor, width=w * config.spatial_factor,
                        sample_rate=int(sample_rate))


def head_latent_frames(num_latent_frames: int) -> int:
    """Latent frames the continuation tasks give as prefix (the registry's 'video_head' cut)."""
    return tasks_lib.SOURCES['video_head'][1]({'video_tokens': np.zeros((num_latent_frames, 1, 1))}).shape[0]


def _check_videos(videos, clip: ClipGeometry, name: str, frames: int | None = None) -> np.ndarray:
    videos = np.asarray(videos)
    want = (frames or clip.num_frames, clip.height, clip.width, 3)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[1:] != want or not len(videos):
        raise ValueError(f'{name} must be uint8 [batch, {", ".join(map(str, want))}] (the clip geometry of the '
                         f'trained tokenizer); got {videos.dtype} {videos.shape}.')
    return videos


class Generator:
    """Runs every task of the registry from media/text to media."""

    def __init__(self, sampler: Sampler, params, vocab: Vocabulary, geometry: tasks_lib.Geometry,
                 tokenizers: Tokenizers, clip: ClipGeometry, depth_fn: structure.DepthFn | None = None,
                 mask_fraction: float = 0.5):
        self.sampler, self.params, self.vocab, self.geometry = sampler, params, vocab, geometry
        self.tokenizers, self.clip = tokenizers, clip
        self.depth_fn = depth_fn or structure.luminance_layout_depth
        self.mask_fraction = mask_fraction
        self.text_embedding_dim = sampler.model.config.text_embedding_dim
        self.align = tokenizers.video.config.spatial_factor

    # ------------------------------------------------------------------ encoding
    def encode_text(self, prompts: Sequence[str]) -> list[dict]:
        """Per prompt the text field of the shards: text_tokens [n] or text_embeddings [n, dim]."""
        if self.text_embedding_dim:
            if self.tokenizers.t5 is None:
                raise ValueError('the LM reads T5 text embeddings but no T5 encoder was given (--t5).')
            values, mask = self.tokenizers.t5.encode(list(prompts), self.geometry.text_length)
            return [{TEXT_EMBEDDINGS: np.asarray(v)[m]} for v, m in zip(values, mask)]
        if self.tokenizers.text is None:
            raise ValueError('the task needs text but no caption tokenizer was given (--text_tokenizer).')
        ids, mask = self.tokenizers.text.encode(list(prompts), self.geometry.text_length)
        return [{'text_tokens': np.asarray(i)[m].astype(np.int32)} for i, m in zip(ids, mask)]

    def encode_video(self, videos: np.ndarray) -> np.ndarray:
        """uint8 [batch, frames, H, W, 3] -> int32 [batch, t, h, w]."""
        return self.tokenizers.video.encode(videos)

    def encode_audio(self, audio: np.ndarray) -> np.ndarray:
        """float32 [batch, samples] -> int32 [batch, levels, frames] matching the geometry."""
        if self.tokenizers.audio is None:
            raise ValueError('the task needs audio tokens but no audio tokenizer was given (--audio_tokenizer).')
        audio = np.asarray(audio, np.float32)
        ids = self.tokenizers.audio.encode(audio)
        if ids.shape[1:] != tuple(self.geometry.audio_shape):
            raise ValueError(f'audio of {audio.shape[1]} samples gives tokens {ids.shape[1:]}; the LM was '
                             f'trained on {tuple(self.geometry.audio_shape)} ({self.clip.audio_samples} samples at '
                             f'{self.clip.sample_rate} Hz).')
        return ids

    # ------------------------------------------------------------------ sampling
    def sample(self, task_name: str, conditions: Sequence[dict], rng: jax.Array, options: SamplingOptions,
               negative_prompts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Samples `task_name`'s output for each row of raw conditioning fields.

        conditions: per row the shard fields the task's prefix reads (e.g. text_tokens,
        video_tokens [t, h, w], audio_tokens [levels, frames]). Returns the output split by
        source, batched: e.g. {'video': int32 [batch, t, h, w]}.
        """
        task = tasks_lib.get_task(task_name)
        rows = [self._fields(c) for c in conditions]
        prefix = self._prefix(task, rows, drop_text=False)
        unconditional = None
        has_text = any(s.kind == 'text' for s in task.prefix)
        if has_text and options.guidance_scale != 1.0:
            if negative_prompts:
                if len(negative_prompts) not in (1, len(rows)):
                    raise ValueError(f'{len(negative_prompts)} negative prompts for {len(rows)} samples; '
                                     'give one or one per sample.')
                texts = self.encode_text(list(negative_prompts) * (len(rows) // len(negative_prompts)))
                unconditional = self._prefix(task, [dict(r, **t) for r, t in zip(rows, texts)], drop_text=False)
            else:
                unconditional = self._prefix(task, rows, drop_text=True)
        constraints = tasks_lib.output_constraints(task, self.geometry, self.vocab)
        out = self.sampler.sample(self.params, prefix, constraints, rng, options, unconditional)
        return tasks_lib.split_output(task, out, self.geometry, self.vocab)

    def _fields(self, condition: dict) -> dict:
        fields = self.geometry.dummy_fields()
        if TEXT_EMBEDDINGS in condition:
            fields.pop('text_tokens')
        fields.update(condition)
        return fields

    def _prefix(self, task: tasks_lib.TaskSpec, rows: list[dict], drop_text: bool) -> dict[str, np.ndarray]:
        inputs = [tasks_lib.build_sequence(task, r, self.vocab, drop_text=drop_text)[0] for r in rows]
        embeddings = None
        if self.text_embedding_dim:
            embeddings = np.zeros((len(rows), max(1, self.geometry.text_length), self.text_embedding_dim), np.float32)
            for i, r in enumerate(rows):
                if TEXT_EMBEDDINGS in r and not drop_text:
                    n = min(len(r[TEXT_EMBEDDINGS]), embeddings.shape[1])
                    embeddings[i, :n] = r[TEXT_EMBEDDINGS][:n]
        return prefix_batch(inputs, task, self.vocab, text_embeddings=embeddings)

    def _decode_video(self, latents: np.ndarray) -> np.ndarray:
        return self.tokenizers.video.decode(latents)

    def _decode_audio(self, ids: np.ndarray) -> np.ndarray:
        """RVQ ids -> float32 [batch, clip.audio_samples] (the tail the hop leaves out is zero)."""
        wave = self.tokenizers.audio.decode(ids)
        n = self.clip.audio_samples
        return np.pad(wave, [(0, 0), (0, max(0, n - wave.shape[1]))])[:, :n]

    # ------------------------------------------------------------------ recipes
    def unconditional(self, num_samples: int, rng, options) -> GenerationResult:
        out = self.sample('unconditional', [{}] * num_samples, rng, options)
        return GenerationResult(video=self._decode_video(out['video']), tokens=out)

    def text_to_video(self, prompts, rng, options, negative_prompts=None) -> GenerationResult:
        out = self.sample('t2v', self.encode_text(prompts), rng, options, negative_prompts)
        return GenerationResult(video=self._decode_video(out['video']), tokens=out)

    def text_to_image(self, prompts, rng, options, negative_prompts=None) -> GenerationResult:
        """video is [batch, 1, H, W, 3]: an image is a 1-frame clip."""
        out = self.sample('t2i', self.encode_text(prompts), rng, options, negative_prompts)
        return GenerationResult(video=self._decode_video(out['first_frame']), tokens=out)

    def image_to_video(self, images: np.ndarray, rng, options) -> GenerationResult:
        """images uint8 [batch, H, W, 3] -> clips that start from them."""
        first = self.encode_video(_check_videos(np.asarray(images)[:, None], self.clip, 'images', frames=1))
        conditions = [{'video_tokens': self._with_head(f, 1)} for f in first]
        out = self.sample('i2v', conditions, rng, options)
        latents = np.concatenate([first, out['after_first_frame']], axis=1)
        return GenerationResult(video=self._decode_video(latents), tokens=dict(out, video=latents))

    def continuation(self, videos: np.ndarray, rng, options) -> GenerationResult:
        """Keeps the first head_frames of each clip and generates the rest."""
        videos = _check_videos(videos, self.clip, 'videos')
        latents = self.encode_video(videos)
        head = head_latent_frames(latents.shape[1])
        out = self.sample('continuation', [{'video_tokens': v} for v in latents], rng, options)
        decoded = self._decode_video(np.concatenate([latents[:, :head], out['video_tail']], axis=1))
        return GenerationResult(video=decoded, tokens=out)

    @property
    def head_frames(self) -> int:
        """Pixel frames the continuation prefix covers (9 for 17-frame clips)."""
        t = self.geometry.video_latent_shape[0]
        return 1 + self.tokenizers.video.config.temporal_factor * (head_latent_frames(t) - 1)

    def long_video(self, start: np.ndarray, num_rounds: int, rng, options, on_round=None) -> GenerationResult:
        """Extends each start clip by num_rounds continuation rounds (see the module docstring).

        start: uint8 [batch, frames, H, W, 3]; returns frames + num_rounds * (frames - head_frames)
        frames and metrics {'seam_step', 'within_step', 'seam_ratio', 'head_reconstruction_step'}.
        `on_round(round_index)` is called after each round (progress).
        """
        if num_rounds < 1:
            raise ValueError(f'long video needs num_rounds >= 1, got {num_rounds}.')
        current = _check_videos(start, self.clip, 'start videos')
        head, seams, within, head_errors, tokens = self.head_frames, [], [], [], []
        for r in range(num_rounds):
            context = current[:, -head:]
            padding = np.repeat(context[:, -1:], self.clip.num_frames - head, axis=1)
            result = self.continuation(np.concatenate([context, padding], axis=1), jax.random.fold_in(rng, r), options)
            new = result.video[:, head:]
            seams.append(_mean_step(current[:, -1], new[:, 0]))
            within.extend(_mean_step(new[:, i], new[:, i + 1]) for i in range(new.shape[1] - 1))
            head_errors.append(_mean_step(context[:, -1], result.video[:, head - 1]))
            tokens.append(result.tokens['video_tail'])
            current = np.concatenate([current, new], axis=1)
            if on_round is not None:
                on_round(r)
        seam, inside = float(np.mean(seams)), float(np.mean(within))
        metrics = {'seam_step': seam, 'within_step': inside, 'seam_ratio': seam / max(inside, 1e-6),
                   'head_reconstruction_step': float(np.mean(head_errors)), 'rounds': num_rounds,
                   'frames': int(current.shape[1])}
        return GenerationResult(video=current, tokens={'video_tail': np.stack(tokens, axis=1)}, metrics=metrics)

    def inpainting(self, videos: np.ndarray, rng, options) -> GenerationResult:
        masked = np.stack([masks.inpaint_clip(v, self.mask_fraction, self.align)
                           for v in _check_videos(videos, self.clip, 'videos')])
        out = self.sample('inpainting', [{'inpaint_tokens': t} for t in self.encode_video(masked)], rng, options)
        return GenerationResult(video=self._decode_video(out['video']), tokens=out, conditioning=masked)

    def outpainting(self, videos: np.ndarray, rng, options) -> GenerationResult:
        masked = np.stack([masks.outpaint_clip(v, self.mask_fraction, self.align)
                           for v in _check_videos(videos, self.clip, 'videos')])
        out = self.sample('outpainting', [{'outpaint_tokens': t} for t in self.encode_video(masked)], rng, options)
        return GenerationResult(video=self._decode_video(out['video']), tokens=out, conditioning=masked)

    def stylization(self, prompts, videos: np.ndarray, rng, options, negative_prompts=None) -> GenerationResult:
        """Restyles each clip by the prompt, keeping its motion and layout (flow + depth)."""
        videos = _check_videos(videos, self.clip, 'videos')
        if len(prompts) != len(videos):
            raise ValueError(f'stylization needs one prompt per video; got {len(prompts)} and {len(videos)}.')
        structure_clips = np.stack([structure.structure_clip(v, self.depth_fn) for v in videos])
        conditions = [dict(t, structure_tokens=s)
                      for t, s in zip(self.encode_text(prompts), self.encode_video(structure_clips))]
        out = self.sample('stylization', conditions, rng, options, negative_prompts)
        return GenerationResult(video=self._decode_video(out['video']), tokens=out, conditioning=structure_clips)

    def video_to_audio(self, videos: np.ndarray, rng, options) -> GenerationResult:
        """Sound for each clip; the result keeps the input video so the two are muxed together."""
        videos = _check_videos(videos, self.clip, 'videos')
        if self.tokenizers.audio is None:
            raise ValueError('video_to_audio needs the audio tokenizer to decode sound (--audio_tokenizer).')
        out = self.sample('video_to_audio', [{'video_tokens': t} for t in self.encode_video(videos)], rng, options)
        return GenerationResult(video=videos, audio=self._decode_audio(out['audio']), tokens=out)

    def audio_to_video(self, audio: np.ndarray, rng, options) -> GenerationResult:
        """A clip for each sound; the given sound is kept for muxing."""
        audio = np.asarray(audio, np.float32)
        ids = self.encode_audio(audio)
        out = self.sample('audio_to_video', [{'audio_tokens': a} for a in ids], rng, options)
        return GenerationResult(video=self._decode_video(out['video']), audio=audio, tokens=out)

    def av_continuation(self, videos: np.ndarray, audio: np.ndarray, rng, options) -> GenerationResult:
        """Continues picture and sound together from the head of each clip."""
        videos = _check_videos(videos, self.clip, 'videos')
        latents, ids = self.encode_video(videos), self.encode_audio(audio)
        out = self.sample('av_continuation', [{'video_tokens': v, 'audio_tokens': a} for v, a in zip(latents, ids)],
                          rng, options)
        head = head_latent_frames(latents.shape[1])
        video = self._decode_video(np.concatenate([latents[:, :head], out['video_tail']], axis=1))
        audio_head = tasks_lib.SOURCES['audio_head'][1]({'video_tokens': latents[0], 'audio_tokens': ids[0]}).shape[1]
        sound = self._decode_audio(np.concatenate([ids[:, :, :audio_head], out['audio_tail']], axis=2))
        return GenerationResult(video=video, audio=sound, tokens=out)

    def _with_head(self, first: np.ndarray, frames: int) -> np.ndarray:
        """[frames, h, w] known latents -> [t, h, w] (the rest zeros; only the head is read)."""
        full = np.zeros(self.geometry.video_latent_shape, np.int32)
        full[:frames] = first[:frames]
        return full


def _mean_step(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference between two frame batches uint8 [batch, H, W, 3]."""
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32))))
