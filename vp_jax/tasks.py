"""The task registry: every VideoPoet task as one entry, and the one sequence builder.

A task is a prefix (conditioning, attended bidirectionally) and an output (generated
causally, the only tokens with loss), each a list of `Segment`s. The same entries drive
training examples (`build_sequence`, called by the SeqIO tasks), sampling
(`output_constraints` tells the sampler which ids are legal at each output position) and
the AGD length groups (`sequence_length`). Adding a task is adding one `TaskSpec` here.

Layout (paper section 3), `|` between prefix and output::

    <bos> <task> <bot_i> text <eot_i> <bov_i> visual <eov_i> <boa_i> audio <eoa_i>
        | <bov_o> video <eov_o> <boa_o> audio <eoa_o> <eos>

A missing modality drops its tokens and its markers. Text-to-image omits `<eov_o>` and
`<eos>` so generation can run on into a video. `<res>` follows the prefix when the output is
portrait (height > width).

Fields a builder reads (raw tokenizer ids, not yet vocabulary ids):
  text_tokens      int32 [n]            caption-tokenizer ids ("tokens" text mode), or
  text_embeddings  float32 [n, dim]     T5 embeddings ("t5" mode): n `<text_emb>` slots
  video_tokens     int32 [t, h, w]      MAGVIT-v2 ids of the clip
  inpaint_tokens / outpaint_tokens / structure_tokens   int32 [t, h, w]
  audio_tokens     int32 [levels, frames]

Worked example (vocab with visual_bits=2, 1 audio level of 2 codes, 4 text ids), task i2v,
video_tokens of shape [2, 1, 1] = [[[3]], [[1]]]::

    inputs  = [<bos>, <task i2v>, <bov_i>, 259, <eov_i>]      (259 = visual id 3)
    targets = [<bov_o>, 257, <eov_o>, <eos>]                  (257 = visual id 1)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from vp_jax.vocabulary import Vocabulary

# ------------------------------------------------------------------ sources
# A source picks the raw ids of one segment out of an example's fields.


def _continuation_split(num_latent_frames: int) -> int:
    """Latent frames given as the prefix of continuation tasks: the first half, rounded up.

    For 17 frames -> 5 latent frames this is 3 (pixel frames 0..8, about 1.1 s at 8 fps),
    the "condition on ~1 s, generate the next ~1 s" step of long-video generation.
    """
    if num_latent_frames < 2:
        raise ValueError(f"continuation needs >= 2 latent frames, got {num_latent_frames}")
    return (num_latent_frames + 1) // 2


def _audio_split(fields: Mapping[str, np.ndarray]) -> int:
    """Audio frames that cover the same time as the continuation prefix's video frames."""
    t = fields["video_tokens"].shape[0]
    c = _continuation_split(t)
    pixel_frames, head_pixel_frames = 1 + 4 * (t - 1), 1 + 4 * (c - 1)
    return fields["audio_tokens"].shape[1] * head_pixel_frames // pixel_frames


SOURCES: dict[str, tuple[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]]] = {
    # name: (field it needs, how to cut it)
    "video": ("video_tokens", lambda f: f["video_tokens"]),
    "first_frame": ("video_tokens", lambda f: f["video_tokens"][:1]),
    "after_first_frame": ("video_tokens", lambda f: f["video_tokens"][1:]),
    "video_head": ("video_tokens",
                   lambda f: f["video_tokens"][:_continuation_split(f["video_tokens"].shape[0])]),
    "video_tail": ("video_tokens",
                   lambda f: f["video_tokens"][_continuation_split(f["video_tokens"].shape[0]):]),
    "inpaint": ("inpaint_tokens", lambda f: f["inpaint_tokens"]),
    "outpaint": ("outpaint_tokens", lambda f: f["outpaint_tokens"]),
    "structure": ("structure_tokens", lambda f: f["structure_tokens"]),
    "audio": ("audio_tokens", lambda f: f["audio_tokens"]),
    "audio_head": ("audio_tokens", lambda f: f["audio_tokens"][:, :_audio_split(f)]),
    "audio_tail": ("audio_tokens", lambda f: f["audio_tokens"][:, _audio_split(f):]),
}


@dataclasses.dataclass(frozen=True)
class Segment:
    """One modality span: `begin` marker, the ids of `source`, `end` marker (None = omitted)."""

    kind: str  # 'text' | 'visual' | 'audio'
    source: str  # key of SOURCES ('caption' for text)
    begin: str
    end: str | None

    def __post_init__(self):
        if self.kind not in ("text", "visual", "audio"):
            raise ValueError(f"Segment.kind must be text/visual/audio, got {self.kind!r}")
        if self.kind != "text" and self.source not in SOURCES:
            raise ValueError(f"Segment.source {self.source!r} unknown; known: {sorted(SOURCES)}")

    @property
    def field(self) -> str:
        return "text" if self.kind == "text" else SOURCES[self.source][0]


TEXT = Segment("text", "caption", "<bot_i>", "<eot_i>")


def _visual_in(source: str) -> Segment:
    return Segment("visual", source, "<bov_i>", "<eov_i>")


def _visual_out(source: str) -> Segment:
    return Segment("visual", source, "<bov_o>", "<eov_o>")


def _audio_in(source: str) -> Segment:
    return Segment("audio", source, "<boa_i>", "<eoa_i>")


def _audio_out(source: str) -> Segment:
    return Segment("audio", source, "<boa_o>", "<eoa_o>")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One VideoPoet task. `index` is its task id and picks its `<task>` token."""

    name: str
    index: int
    prefix: tuple[Segment, ...]
    output: tuple[Segment, ...]
    end_with_eos: bool = True
    is_image_task: bool = False  # for the paper's image/video data schedule

    @property
    def fields(self) -> tuple[str, ...]:
        """Example fields this task needs ('text' = text_tokens or text_embeddings)."""
        return tuple(dict.fromkeys(s.field for s in self.prefix + self.output))

    @property
    def output_kinds(self) -> tuple[str, ...]:
        return tuple(s.kind for s in self.output)


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("unconditional", 0, (), (_visual_out("video"),)),
    TaskSpec("t2v", 1, (TEXT,), (_visual_out("video"),)),
    TaskSpec("t2i", 2, (TEXT,), (Segment("visual", "first_frame", "<bov_o>", None),),
             end_with_eos=False, is_image_task=True),
    TaskSpec("i2v", 3, (_visual_in("first_frame"),), (_visual_out("after_first_frame"),)),
    TaskSpec("continuation", 4, (_visual_in("video_head"),), (_visual_out("video_tail"),)),
    TaskSpec("inpainting", 5, (_visual_in("inpaint"),), (_visual_out("video"),)),
    TaskSpec("outpainting", 6, (_visual_in("outpaint"),), (_visual_out("video"),)),
    TaskSpec("stylization", 7, (TEXT, _visual_in("structure")), (_visual_out("video"),)),
    TaskSpec("audio_to_video", 8, (_audio_in("audio"),), (_visual_out("video"),)),
    TaskSpec("video_to_audio", 9, (_visual_in("video"),), (_audio_out("audio"),)),
    TaskSpec("av_continuation", 10, (_visual_in("video_head"), _audio_in("audio_head")),
             (_visual_out("video_tail"), _audio_out("audio_tail"))),
)
TASKS_BY_NAME: dict[str, TaskSpec] = {t.name: t for t in TASKS}
assert [t.index for t in TASKS] == list(range(len(TASKS))), "task indices must be 0..n-1"
NUM_TASKS = len(TASKS)


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS_BY_NAME)}") from None


# ------------------------------------------------------------------ builder


def _segment_ids(segment: Segment, fields: Mapping[str, np.ndarray], vocab: Vocabulary,
                 drop_text: bool) -> np.ndarray:
    if segment.kind == "text":
        if drop_text:
            return np.zeros([0], np.int32)
        if "text_embeddings" in fields:
            n = np.asarray(fields["text_embeddings"]).shape[0]
            return np.full([n], vocab.token("<text_emb>"), np.int32)
        return vocab.text_to_vocab(np.asarray(fields["text_tokens"]).reshape(-1), "text_tokens")
    raw = np.asarray(SOURCES[segment.source][1](fields))
    if segment.kind == "visual":
        if raw.ndim != 3:
            raise ValueError(f"{segment.field}: expected [t, h, w] ids, got shape {raw.shape}")
        return vocab.visual_to_vocab(raw.reshape(-1), segment.field)
    return vocab.audio_to_vocab(raw, segment.field)


def _markers(vocab: Vocabulary, *names: str | None) -> list[np.ndarray]:
    return [np.array([vocab.token(n)], np.int32) for n in names if n is not None]


def _check_fields(task: TaskSpec, fields: Mapping[str, np.ndarray], drop_text: bool) -> None:
    for field in task.fields:
        if field == "text":
            if not drop_text and "text_tokens" not in fields and "text_embeddings" not in fields:
                raise ValueError(f"task {task.name!r} needs 'text_tokens' or 'text_embeddings'")
        elif field not in fields:
            raise ValueError(f"task {task.name!r} needs field {field!r}; got {sorted(fields)}")


def build_sequence(task: TaskSpec, fields: Mapping[str, np.ndarray], vocab: Vocabulary,
                   drop_text: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Builds (inputs, targets): int32 vocabulary ids of the prefix and of the output.

    `drop_text` keeps the text markers but empties the caption: the null prompt that
    classifier-free guidance trains on and samples with.
    """
    _check_fields(task, fields, drop_text)
    parts = _markers(vocab, "<bos>") + [np.array([vocab.task_token(task.index)], np.int32)]
    for segment in task.prefix:
        parts += _markers(vocab, segment.begin)
        parts.append(_segment_ids(segment, fields, vocab, drop_text))
        parts += _markers(vocab, segment.end)
    if "video_tokens" in fields and _is_portrait(task, fields):
        parts += _markers(vocab, "<res>")
    out = []
    for segment in task.output:
        out += _markers(vocab, segment.begin)
        out.append(_segment_ids(segment, fields, vocab, drop_text))
        out += _markers(vocab, segment.end)
    if task.end_with_eos:
        out += _markers(vocab, "<eos>")
    return np.concatenate(parts).astype(np.int32), np.concatenate(out).astype(np.int32)


def _is_portrait(task: TaskSpec, fields: Mapping[str, np.ndarray]) -> bool:
    if "visual" not in task.output_kinds:
        return False
    _, h, w = np.asarray(fields["video_tokens"]).shape
    return h > w


# ------------------------------------------------------------ shapes and sampling


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Token shapes of one clip: what fixes every task's sequence length (AGD groups)."""

    video_latent_shape: tuple[int, int, int]  # (t, h, w)
    audio_shape: tuple[int, int]  # (levels, frames)
    text_length: int  # caption tokens (or T5 embeddings) per example, at most

    def dummy_fields(self, text_length: int | None = None) -> dict[str, np.ndarray]:
        n = self.text_length if text_length is None else text_length
        video = np.zeros(self.video_latent_shape, np.int32)
        return {"text_tokens": np.zeros([n], np.int32), "video_tokens": video,
                "inpaint_tokens": video, "outpaint_tokens": video, "structure_tokens": video,
                "audio_tokens": np.zeros(self.audio_shape, np.int32)}


def sequence_lengths(task: TaskSpec, geometry: Geometry, vocab: Vocabulary) -> tuple[int, int]:
    """(prefix length, output length) at the longest caption."""
    # Caption slots count the same as tokens or as T5 embeddings; the embedding form needs
    # no text vocabulary (text_vocab_size may be 0 in "t5" text mode).
    fields = dict(geometry.dummy_fields(),
                  text_embeddings=np.zeros([geometry.text_length, 1], np.float32))
    inputs, targets = build_sequence(task, fields, vocab)
    return len(inputs), len(targets)


def model_length(task: TaskSpec, geometry: Geometry, vocab: Vocabulary) -> int:
    """Model positions one example of `task` occupies: inputs + targets - 1 (see features)."""
    p, o = sequence_lengths(task, geometry, vocab)
    return p + o - 1


def output_constraints(task: TaskSpec, geometry: Geometry, vocab: Vocabulary
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the sampler may emit at each output position.

    Returns (forced, low, high), each int32 [output_length]: where forced >= 0 the id is a
    marker the layout fixes; elsewhere the id must lie in [low, high): the visual range
    inside a video span, the right RVQ level's block inside an audio span.
    """
    fields = geometry.dummy_fields()
    forced, low, high = [], [], []

    def add_marker(name):
        if name is not None:
            forced.append(vocab.token(name)); low.append(0); high.append(0)

    for segment in task.output:
        add_marker(segment.begin)
        raw = np.asarray(SOURCES[segment.source][1](fields))
        if segment.kind == "visual":
            lo, hi = vocab.visual_range
            forced += [-1] * raw.size; low += [lo] * raw.size; high += [hi] * raw.size
        else:
            levels, frames = raw.shape
            for level in range(levels):
                lo, hi = vocab.audio_level_range(level)
                forced += [-1] * frames; low += [lo] * frames; high += [hi] * frames
        add_marker(segment.end)
    if task.end_with_eos:
        add_marker("<eos>")
    return (np.array(forced, np.int32), np.array(low, np.int32), np.array(high, np.int32))


def split_output(task: TaskSpec, targets: np.ndarray, geometry: Geometry, vocab: Vocabulary
                 ) -> dict[str, np.ndarray]:
    """Cuts generated output ids back into raw tokenizer ids per output segment source.

    Returns e.g. {'video': int32 [t, h, w]} or {'audio': int32 [levels, frames]}; the
    inverse of the output half of `build_sequence` for this geometry.
    """
    forced, _, _ = output_constraints(task, geometry, vocab)
    targets = np.asarray(targets)
    if targets.shape[-1] != forced.shape[0]:
        raise ValueError(f"task {task.name}: expected {forced.shape[0]} output ids, got {targets.shape[-1]}")
    fields = geometry.dummy_fields()
    pos, result = 0, {}
    for segment in task.output:
        pos += segment.begin is not None
        shape = np.asarray(SOURCES[segment.source][1](fields)).shape
        n = int(np.prod(shape))
        ids = targets[..., pos:pos + n]
        if segment.kind == "visual":
            result[segment.source] = vocab.vocab_to_visual(ids).reshape(*ids.shape[:-1], *shape)
        else:
            result[segment.source] = vocab.vocab_to_audio(ids)
        pos += n + (segment.end is not None)
    return result


def task_names(names: Sequence[str]) -> list[TaskSpec]:
    """Validates a list of task names from config (clear error on an unknown one)."""
    return [get_task(n) for n in names]
