"""Look inside a dataset folder: counts per split, one decoded example as gif + png.

    python -m data_pipelines.inspect --dir=/work/run/shards --split=train --index=0 --out=/tmp/look
    python -m data_pipelines.inspect --dir=/work/run/shards --video_tokenizer=ckpt/magvit2  # real pixels

Works on token shards (spec.json) and on raw-clip stores from ingestion (clips_spec.json).
Counts come from reading every record (so a damaged shard shows up), not from the spec.
For token shards the example's tokens are decoded to pixels when --video_tokenizer is
given; otherwise each token id is drawn as a colour (a false-colour view that still shows
layout and motion). Writes <out>/<clip_id>.gif and .png (frames side by side).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from data_pipelines import clip_store, schema


def false_colour(ids: np.ndarray, num_ids: int, scale: int = 8) -> np.ndarray:
    """int [t, h, w] token ids -> uint8 [t, h*scale, w*scale, 3] (hue from the id)."""
    import colorsys

    hues = (np.asarray(ids, np.float64) * 0.6180339887) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.8, 0.3 + 0.7 * ((i % 7) / 6))
                    for h, i in zip(hues.ravel(), np.asarray(ids).ravel())]).reshape(*ids.shape, 3)
    video = (rgb * 255).astype(np.uint8)
    return np.repeat(np.repeat(video, scale, axis=1), scale, axis=2)


def count_records(files: list[str]) -> dict[str, int]:
    import tensorflow as tf

    return {os.path.basename(f): sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files}


def main(argv: list[str] | None = None) -> dict:
    import tensorflow as tf

    from vp_jax import media

    parser = argparse.ArgumentParser(prog="python -m data_pipelines.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--split", default=None, help="split to show (default: the first)")
    parser.add_argument("--index", type=int, default=0, help="example to show")
    parser.add_argument("--out", default=None, help="where gif/png go (default: <dir>/inspect)")
    parser.add_argument("--video_tokenizer", default=None)
    parser.add_argument("--fps", type=float, default=8.0)
    args = parser.parse_args(argv)

    raw = os.path.exists(os.path.join(args.dir, clip_store.STORE_SPEC_FILENAME))
    if raw:
        with open(os.path.join(args.dir, clip_store.STORE_SPEC_FILENAME)) as f:
            splits = {s: [os.path.join(args.dir, n) for n in v["files"]] for s, v in json.load(f)["splits"].items()}
    else:
        spec = schema.ShardSpec.read(args.dir)
        splits = {s: spec.split_files(args.dir, s) for s in spec.splits}
        print(f"[inspect] schema v{spec.schema_version} vocabulary {spec.vocabulary} geometry {spec.geometry}")
        print(f"[inspect] tokenizers {spec.tokenizers}")
    summary = {}
    for split, files in sorted(splits.items()):
        counts = count_records(files)
        summary[split] = sum(counts.values())
        print(f"[inspect] split {split}: {summary[split]} examples in {len(files)} shards")
    split = args.split or sorted(splits)[0]
    if split not in splits:
        raise ValueError(f"--split={split!r}: {args.dir} has splits {sorted(splits)}")
    records = tf.data.TFRecordDataset(splits[split]).skip(args.index).take(1)
    record = next(iter(records.as_numpy_iterator()), None)
    if record is None:
        raise ValueError(f"--index={args.index}: split {split!r} has only {summary[split]} examples")
    if raw:
        clip = clip_store.decode_clip(record)
        clip_id, caption, video = clip.clip_id, clip.caption, clip.video
        print(f"[inspect] {clip_id}: video {video.shape}, audio "
              f"{None if clip.audio is None else clip.audio.shape}, caption {caption!r}")
    else:
        fields = tuple(f for f in spec.fields if f in schema.ALL_FIELDS)
        ex = {k: (v.numpy() if hasattr(v, "numpy") else v)
              for k, v in schema.parse_example(tf.constant(record), fields).items()}
        clip_id, caption = ex["clip_id"].decode(), ex["caption"].decode()
        print(f"[inspect] {clip_id}: caption {caption!r}")
        for name in fields:
            if name in schema.TOKEN_FIELDS or name in schema.FLOAT_FIELDS:
                v = ex[name]
                print(f"  {name:17s} shape {list(v.shape)} range [{v.min()}, {v.max()}]")
        print(f"  metadata_json     {ex['metadata_json'].decode()[:300]}")
        if args.video_tokenizer:
            from vp_tokenizers.magvit2.api import VideoTokenizer
            video = VideoTokenizer.load(args.video_tokenizer).decode(ex["video_tokens"][None])[0]
        else:
            video = false_colour(ex["video_tokens"], 2 ** spec.vocabulary["visual_bits"])
    out = args.out or os.path.join(args.dir, "inspect")
    os.makedirs(out, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in clip_id)
    gif, png = os.path.join(out, safe + ".gif"), os.path.join(out, safe + ".png")
    media.write_gif(gif, video, args.fps)
    media.write_png(png, media.contact_sheet(video[None], labels=[caption[:60]]))
    print(f"[inspect] wrote {gif} and {png}")
    return {"counts": summary, "gif": gif, "png": png}


if __name__ == "__main__":
    main(sys.argv[1:])
