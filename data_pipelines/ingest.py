"""Ingestion: captioned media folders -> decoded clips (or token shards) + report.json.

    python -m data_pipelines.ingest --manifest=/data/captions.jsonl --output_dir=/data/clips
    python -m data_pipelines.ingest --image_folder=/data/photos --output_dir=/data/clips
    # write token shards directly: add tokenizer checkpoints
    python -m data_pipelines.ingest --manifest=captions.csv --output_dir=/data/shards \
        --video_tokenizer=ckpt/magvit2 --audio_tokenizer=ckpt/soundstream --caption_tokenizer=captions.model

Every video is decoded with PyAV (any container/codec, any fps/size, with or without sound),
resampled to --fps, cut into --num_frames clips, resized and centre-cropped to
--height x --width, its sound mono-mixed and resampled to --sample_rate. Without
tokenizers the clips are stored as raw-clip shards (clip_store.py, read by the tokenizer
trainers and by `pretokenize --source=clips:<dir>`); with --video_tokenizer they become
token shards with spec.json (pretokenize.py). Either way `<output_dir>/report.json` lists,
per input file, the clips made (count, frames, fps, size, audio sample rate and channels)
or the reason it was skipped (corrupt, truncated, unreadable, too short, no caption, path
outside the dataset root). Unknown flags (e.g. --runner=DataflowRunner) go to Beam.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from data_pipelines import beam_pipeline, clip_sources, clip_store, manifest, media_decode
from vp_jax.files import atomic_open

REPORT_FILENAME = "report.json"


def add_geometry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_frames", type=int, default=17)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--stride_frames", type=int, default=None,
                        help="frames between clip starts (default: num_frames, no overlap)")
    parser.add_argument("--max_clips_per_file", type=int, default=None)


def geometry_from_flags(args) -> media_decode.ClipGeometry:
    return media_decode.ClipGeometry(args.num_frames, args.fps, args.height, args.width,
                                     args.sample_rate, args.stride_frames, args.max_clips_per_file)


def add_tokenizer_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video_tokenizer", default=None, help="MAGVIT-v2 checkpoint directory")
    parser.add_argument("--audio_tokenizer", default=None, help="SoundStream checkpoint directory")
    parser.add_argument("--caption_tokenizer", default=None, help="caption tokenizer model file")
    parser.add_argument("--t5_encoder", default=None, help="T5 encoder directory (text embeddings)")
    parser.add_argument("--text_length", type=int, default=64)
    parser.add_argument("--depth_model", default=None,
                        help="'module:function' depth model for structure clips "
                             "(default: the offline luminance-layout substitute)")
    parser.add_argument("--batch_size", type=int, default=8)


def token_encoder_from_flags(args):
    from data_pipelines.pretokenize import TokenEncoder, TokenizerPaths

    paths = TokenizerPaths(args.video_tokenizer, args.audio_tokenizer, args.caption_tokenizer,
                           args.t5_encoder)
    return TokenEncoder(paths, text_length=args.text_length, depth_model=args.depth_model,
                        batch_size=args.batch_size)


def default_num_shards(units, units_per_shard: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for u in units:
        counts[u.split] = counts.get(u.split, 0) + 1
    return {split: max(1, math.ceil(n / units_per_shard)) for split, n in sorted(counts.items())}


def media_units(manifests: list[str], image_folders: list[str], root: str | None,
                geometry: media_decode.ClipGeometry, split: str) -> list[clip_sources.MediaUnit]:
    entries = []
    for path in manifests:
        entries += manifest.read_manifest(path, root=root, default_split=split)
    for folder in image_folders:
        entries += manifest.read_image_folder(folder, split=split)
    if not entries:
        raise ValueError("nothing to ingest: give --manifest and/or --image_folder with rows")
    seen, units = {}, []
    for e in entries:
        if e.source_id in seen:  # reported, and given its own key so units stay unique
            e = manifest.ManifestEntry(e.source, e.kind, f"{e.relpath}#{e.source}", "", e.caption,
                                       e.split, e.error or f"duplicate of {seen[e.source_id]}: "
                                                           f"{e.relpath!r} is listed twice")
        seen.setdefault(e.source_id, e.source)
        units.append(clip_sources.MediaUnit(e, geometry))
    return units


def write_report(output_dir: str, result: beam_pipeline.PipelineResult, settings: dict) -> str:
    files = result.reports
    report = {
        "settings": settings,
        "summary": {"inputs": len(files),
                    "ok": sum(r["status"] == "ok" for r in files),
                    "skipped": sum(r["status"] == "skipped" for r in files),
                    "clips": sum(r.get("clips", 0) for r in files),
                    "examples": {s: v["num_examples"] for s, v in result.splits.items()}},
        "files": files,
    }
    path = os.path.join(output_dir, REPORT_FILENAME)
    with atomic_open(path) as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m data_pipelines.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", action="append", default=[], help=".jsonl or .csv (repeatable)")
    parser.add_argument("--image_folder", action="append", default=[],
                        help="folder of images with <name>.txt captions (repeatable)")
    parser.add_argument("--root", default=None, help="dataset root (default: the manifest's folder)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", default="train", help="split of rows without a 'split' field")
    parser.add_argument("--units_per_shard", type=int, default=64, help="media files per shard")
    add_geometry_flags(parser)
    add_tokenizer_flags(parser)
    args, beam_args = parser.parse_known_args(argv)
    geometry = geometry_from_flags(args)
    units = media_units(args.manifest, args.image_folder, args.root, geometry, args.split)
    num_shards = default_num_shards(units, args.units_per_shard)
    encoder = token_encoder_from_flags(args) if args.video_tokenizer else clip_store.RawClipEncoder()
    result = beam_pipeline.run_pipeline(units, encoder, args.output_dir, num_shards, beam_args,
                                        name="ingest")
    geometry_dict = {"num_frames": geometry.num_frames, "fps": geometry.fps,
                     "height": geometry.height, "width": geometry.width,
                     "sample_rate": geometry.sample_rate}
    if args.video_tokenizer:
        from data_pipelines.pretokenize import write_spec
        write_spec(args.output_dir, encoder, result, extra={"clip_geometry": geometry_dict})
    else:
        clip_store.write_store_spec(args.output_dir, result.splits, geometry_dict)
    path = write_report(args.output_dir, result, {"manifests": args.manifest,
                                                  "image_folders": args.image_folder,
                                                  "geometry": geometry_dict})
    with open(path) as f:
        summary = json.load(f)["summary"]
    print(f"[ingest] {summary['ok']} files ok, {summary['skipped']} skipped, {summary['clips']} clips "
          f"-> {args.output_dir} (report: {path})")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
