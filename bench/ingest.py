"""Ingestion throughput (clips/s): demo clips written as mp4 files, then ingested.

    python bench/ingest.py --num_files=20 --seconds=6
Prints decode-only clips/s (media_decode) and end-to-end clips/s of the ingest command
(DirectRunner, raw-clip shards, report.json). Figures on a shared 2-core machine are
taken under contention; say so when quoting them.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

from data_pipelines import ingest, media_decode
from data_pipelines.demo import demo_clip
from vp_jax import media


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each source video")
    parser.add_argument("--source_size", type=int, default=128)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench_ingest_")
    frames = int(args.seconds * 24)
    rows = []
    for i in range(args.num_files):
        clip = demo_clip("train", i, seed=0, size=args.source_size, num_frames=frames, fps=24)
        media.write_mp4(os.path.join(root, f"v{i}.mp4"), clip.video, 24, audio=clip.audio)
        rows.append({"video": f"v{i}.mp4", "caption": clip.caption})
    with open(os.path.join(root, "m.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    geometry = media_decode.ClipGeometry()
    start, clips = time.time(), 0
    for r in rows:
        clips += len(media_decode.decode_video_clips(os.path.join(root, r["video"]), geometry)[1])
    decode_s = time.time() - start
    print(f"decode only: {clips} clips ({args.source_size}px 24 fps sources -> 17x32x32 at 8 fps) "
          f"in {decode_s:.2f} s = {clips / decode_s:.1f} clips/s")
    start = time.time()
    summary = ingest.main([f"--manifest={root}/m.jsonl", f"--output_dir={root}/out"])
    total_s = time.time() - start
    print(f"ingest command: {summary['clips']} clips in {total_s:.2f} s = "
          f"{summary['clips'] / total_s:.1f} clips/s (includes Beam/TF start-up)")


if __name__ == "__main__":
    main()
