"""Pre-tokenization: clips -> token shards (schema.py) + spec.json, on Apache Beam.

    python -m data_pipelines.pretokenize --source=demo --demo_clips=train:2000,validation:200,test:200 \
        --video_tokenizer=/work/run/magvit2_demo/checkpoints \
        --audio_tokenizer=/work/run/soundstream_demo/checkpoints \
        --caption_tokenizer=/work/run/text/captions.model --output_dir=/work/run/shards
    # sources: --source=demo | --source=clips:<ingest output dir> | --source=manifest:<file.jsonl|.csv>
    # any other flag goes to Beam, e.g. --runner=DataflowRunner --project=... (default DirectRunner)

Per clip the shard example holds (schema.py): clip_id, caption, metadata_json (source, time
span, demo ground truth), video_tokens [t, h, w] (first-frame tokens are video_tokens[:1]:
the tokenizer is causal, so they equal the tokens of the first frame alone), inpaint_tokens
and outpaint_tokens (masks.py), structure_tokens (structure.py: flow + depth), audio_tokens
[levels, frames] when the clip has sound, and text_tokens and/or text_embeddings.
Images (1-frame clips) get video_tokens and text only.

Tokenizers are loaded on each worker from checkpoint paths (`TokenizerPaths`), or from any
zero-argument factory returning a `Tokenizers` bundle (tests build tiny real ones).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable

import numpy as np

from data_pipelines import beam_pipeline, clip_sources, masks, schema, structure
from data_pipelines.clip_sources import Clip

VIDEO_FIELDS = ("video_tokens", "inpaint_tokens", "outpaint_tokens", "structure_tokens")
DEFAULT_FIELDS = VIDEO_FIELDS + ("audio_tokens", "text_tokens", "text_embeddings")


@dataclasses.dataclass
class Tokenizers:
    """The models pre-tokenization runs. Any of audio/text/t5 may be None (field omitted).

    video: `.encode(uint8 [B,T,H,W,3]) -> int32 [B,t,h,w]`, `.bits`, `.checkpoint_id`,
      `.config.spatial_factor` (optional, for mask alignment)
    audio: `.encode(float32 [B,samples]) -> int32 [B,levels,frames]`, `.levels`,
      `.codebook_size`, `.checkpoint_id`
    text: `.encode(captions, max_length) -> (int32 [B,L], bool [B,L])`, `.vocab_size`
    t5: `.encode(captions, max_length) -> (float32 [B,L,dim], bool [B,L])`, `.dim`
    """

    video: object
    audio: object | None = None
    text: object | None = None
    t5: object | None = None


@dataclasses.dataclass(frozen=True)
class TokenizerPaths:
    """Picklable recipe for `Tokenizers`: checkpoint paths, loaded on each Beam worker."""

    video: str
    audio: str | None = None
    text: str | None = None
    t5: str | None = None

    def __call__(self) -> Tokenizers:
        from vp_tokenizers.magvit2.api import VideoTokenizer

        audio = text = t5 = None
        if self.audio:
            from vp_tokenizers.soundstream.api import AudioTokenizer
            audio = AudioTokenizer.load(self.audio)
        if self.text:
            from vp_tokenizers.text.caption_tokenizer import CaptionTokenizer
            text = CaptionTokenizer.load(self.text)
        if self.t5:
            from vp_tokenizers.text.t5 import T5Encoder
            t5 = T5Encoder.load(self.t5)
        return Tokenizers(VideoTokenizer.load(self.video), audio, text, t5)


def _text_id(tok) -> str | None:
    if tok is None:
        return None
    return str(getattr(tok, "checkpoint_id", None) or getattr(tok, "source", None)
               or type(tok).__name__)


class TokenEncoder:
    """The pipeline encoder (beam_pipeline.ClipEncoder) that writes token shard examples."""

    def __init__(self, tokenizers_factory: Callable[[], Tokenizers], text_length: int = 64,
                 fields: tuple[str, ...] = DEFAULT_FIELDS, depth_model: str | None = None,
                 mask_fraction: float = 0.5, batch_size: int = 8):
        unknown = set(fields) - set(DEFAULT_FIELDS)
        if unknown:
            raise ValueError(f"pretokenize fields: unknown {sorted(unknown)}; known {DEFAULT_FIELDS}")
        if "video_tokens" not in fields:
            raise ValueError("pretokenize fields must include 'video_tokens'")
        if text_length < 1 or batch_size < 1:
            raise ValueError(f"text_length and batch_size must be >= 1, got {text_length}, {batch_size}")
        self.factory = tokenizers_factory
        self.text_length, self.fields = text_length, tuple(fields)
        self.depth_model, self.mask_fraction, self.batch_size = depth_model, mask_fraction, batch_size
        self._tok: Tokenizers | None = None

    def __getstate__(self):  # workers load their own models; never pickle loaded weights
        return {**self.__dict__, "_tok": None, "_depth_fn": None}

    def setup(self) -> None:
        if self._tok is None:
            self._tok = self.factory()
            self._depth_fn, self.depth_name = structure.load_depth_fn(self.depth_model)

    @property
    def tokenizers(self) -> Tokenizers:
        self.setup()
        return self._tok

    def batch_key(self, clip: Clip):
        return clip.video.shape, clip.audio is not None and clip.audio.shape

    def describe(self) -> dict:
        tok = self.tokenizers
        return {
            "kind": "tokens", "schema_version": schema.SCHEMA_VERSION, "fields": list(self.fields),
            "video": tok.video.checkpoint_id,
            "audio": tok.audio.checkpoint_id if tok.audio is not None else None,
            "text": _text_id(tok.text), "t5": _text_id(tok.t5), "text_length": self.text_length,
            "depth": self.depth_name, "mask_fraction": self.mask_fraction,
        }

    def _wanted(self, field: str) -> bool:
        tok = self.tokenizers
        needs = {"audio_tokens": tok.audio, "text_tokens": tok.text, "text_embeddings": tok.t5}
        return field in self.fields and (field not in needs or needs[field] is not None)

    def encode(self, clips: list[Clip]) -> list[tuple[bytes, dict]]:
        tok = self.tokenizers
        videos = np.stack([c.video for c in clips])
        align = getattr(getattr(tok.video, "config", None), "spatial_factor", 8)
        groups = {"video_tokens": videos}
        if videos.shape[1] > 1:  # masked and structure clips only make sense for videos
            if self._wanted("inpaint_tokens"):
                groups["inpaint_tokens"] = np.stack([masks.inpaint_clip(v, self.mask_fraction, align)
                                                     for v in videos])
            if self._wanted("outpaint_tokens"):
                groups["outpaint_tokens"] = np.stack([masks.outpaint_clip(v, self.mask_fraction, align)
                                                      for v in videos])
            if self._wanted("structure_tokens"):
                groups["structure_tokens"] = np.stack([structure.structure_clip(v, self._depth_fn)
                                                       for v in videos])
        ids = tok.video.encode(np.concatenate(list(groups.values())))
        tokens = dict(zip(groups, np.split(ids, len(groups))))
        if clips[0].audio is not None and self._wanted("audio_tokens"):
            tokens["audio_tokens"] = tok.audio.encode(np.stack([c.audio for c in clips]))
        captions = [c.caption for c in clips]
        text = embeddings = caption_tokens = None
        if self._wanted("text_tokens"):
            text = tok.text.encode(captions, self.text_length)
            caption_tokens = tok.text.count_tokens(captions)
        if self._wanted("text_embeddings"):
            embeddings = tok.t5.encode(captions, self.text_length)
            caption_tokens = tok.t5.count_tokens(captions)
        out = []
        for i, clip in enumerate(clips):
            example = {"clip_id": clip.clip_id, "caption": clip.caption,
                       "metadata_json": json.dumps(clip.metadata, sort_keys=True)}
            example.update({name: value[i] for name, value in tokens.items()})
            if text is not None:
                example["text_tokens"] = text[0][i][text[1][i]]
            if embeddings is not None:
                example["text_embeddings"] = embeddings[0][i][embeddings[1][i]]
            info = {"frames": int(clip.video.shape[0]),
                    "video_latent_shape": list(tokens["video_tokens"][i].shape)}
            if "audio_tokens" in tokens:
                info["audio_shape"] = list(tokens["audio_tokens"][i].shape)
            if caption_tokens is not None:  # uncut length: write_spec reports captions text_length cuts
                info["caption_tokens"] = caption_tokens[i]
            out.append((schema.encode_example(example, source=clip.clip_id), info))
        return out


def write_spec(output_dir: str, encoder: TokenEncoder, result: beam_pipeline.PipelineResult,
               extra: dict | None = None) -> schema.ShardSpec:
    """spec.json: vocabulary, tokenizer checkpoints, geometry (from what was written), counts."""
    from vp_jax.vocabulary import Vocabulary

    tok = encoder.tokenizers
    vocab = Vocabulary(visual_bits=int(tok.video.bits),
                       audio_levels=int(tok.audio.levels) if tok.audio is not None else 0,
                       audio_codebook_size=int(tok.audio.codebook_size) if tok.audio is not None else 0,
                       text_vocab_size=int(tok.text.vocab_size) if tok.text is not None else 0)
    shapes = {"video": [], "image": [], "audio": []}
    for info in result.infos:
        for shape in info.get("video_latent_shape", []):
            kind = "image" if shape[0] == 1 else "video"
            if shape not in shapes[kind]:
                shapes[kind].append(shape)
        for shape in info.get("audio_shape", []):
            if shape not in shapes["audio"]:
                shapes["audio"].append(shape)
    for kind, found in shapes.items():
        if len(found) > 1:
            raise ValueError(f"{output_dir}: clips gave several {kind} token shapes {found}; "
                             "one dataset must have one geometry")
    description = encoder.describe()
    caption_tokens = [n for info in result.infos for n in info.get("caption_tokens", [])]
    longest_caption = max(caption_tokens, default=0)
    if longest_caption > encoder.text_length:
        print(f"[pretokenize] WARNING {output_dir}: the longest caption needs {longest_caption} text tokens "
              f"(with EOS); text_length={encoder.text_length} cuts captions longer than that. Raise "
              f"text_length to at least {longest_caption} to keep every caption whole.", flush=True)
    geometry = {
        "video_latent_shape": (shapes["video"] or [None])[0],
        "image_latent_shape": (shapes["image"] or [None])[0],
        "audio_shape": (shapes["audio"] or [None])[0],
        "text_length": encoder.text_length,
        "text_embedding_dim": int(tok.t5.dim) if tok.t5 is not None else 0,
    }
    fields = ["clip_id", "caption", "metadata_json"] + [
        f for f in encoder.fields if encoder._wanted(f)]
    spec = schema.ShardSpec(
        vocabulary=vocab.to_dict(),
        tokenizers={"video": description["video"], "audio": description["audio"],
                    "text": {"kind": "tokens" if tok.text is not None else ("t5" if tok.t5 else None),
                             "tokens": description["text"], "t5": description["t5"]},
                    "depth": description["depth"]},
        geometry=geometry, splits=result.splits, fields=fields,
        extra={"mask_fraction": encoder.mask_fraction, "longest_caption_tokens": longest_caption,
               **(extra or {})})
    spec.write(output_dir)
    return spec


def parse_split_counts(text: str) -> dict[str, int]:
    """'train:2000,validation:200' -> {'train': 2000, 'validation': 200}."""
    counts = {}
    for part in filter(None, text.split(",")):
        name, _, n = part.partition(":")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--demo_clips entry {part!r}: expected split:count with count >= 1")
        counts[name.strip()] = int(n)
    if not counts:
        raise ValueError(f"--demo_clips {text!r}: expected e.g. 'train:2000,validation:200'")
    return counts


def units_for_source(source: str, args) -> list:
    """Work units for --source=demo | clips:<dir> | manifest:<file>."""
    from data_pipelines import clip_store, ingest

    kind, _, target = source.partition(":")
    if kind == "demo":
        return clip_sources.demo_units(parse_split_counts(args.demo_clips), args.demo_seed,
                                       args.height, args.num_frames, args.fps, args.sample_rate)
    if kind == "clips" and target:
        return clip_store.store_units(target)
    if kind == "manifest" and target:
        return ingest.media_units([target], [], None, ingest.geometry_from_flags(args), "train")
    raise ValueError(f"--source={source!r}: expected 'demo', 'clips:<dir>' or 'manifest:<file>'")


def main(argv: list[str] | None = None) -> schema.ShardSpec:
    from data_pipelines import ingest

    parser = argparse.ArgumentParser(prog="python -m data_pipelines.pretokenize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="demo")
    parser.add_argument("--demo_clips", default="train:2000,validation:200,test:200")
    parser.add_argument("--demo_seed", type=int, default=0)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--units_per_shard", type=int, default=256)
    ingest.add_geometry_flags(parser)
    ingest.add_tokenizer_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    if not args.video_tokenizer:
        parser.error("--video_tokenizer is required (a MAGVIT-v2 checkpoint directory)")
    if args.source == "demo" and args.height != args.width:
        parser.error(f"the demo makes square clips: --height={args.height} must equal --width={args.width}")
    units = units_for_source(args.source, args)
    encoder = ingest.token_encoder_from_flags(args)
    start = time.time()
    result = beam_pipeline.run_pipeline(units, encoder, args.output_dir,
                                        ingest.default_num_shards(units, args.units_per_shard),
                                        beam_args, name="pretokenize")
    spec = write_spec(args.output_dir, encoder, result, extra={"source": args.source})
    ingest.write_report(args.output_dir, result, {"source": args.source})
    total = sum(v["num_examples"] for v in result.splits.values())
    print(f"[pretokenize] {total} examples in {sum(len(v['files']) for v in result.splits.values())} "
          f"shards -> {args.output_dir} ({result.units_run} units run, {time.time() - start:.1f} s)")
    return spec


if __name__ == "__main__":
    main(sys.argv[1:])
