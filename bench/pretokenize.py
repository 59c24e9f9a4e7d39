"""Pre-tokenization throughput (clips/s) on demo clips.

    python bench/pretokenize.py --num_clips=64 [--video_tokenizer=ckpt --audio_tokenizer=ckpt]
Without checkpoints it uses tiny randomly initialised real tokenizers (the test ones), so
the figure measures the pipeline (masks, flow/depth structure clips, 4 video encodes + 1
audio encode per clip, serialisation), not a trained model's cost. Prints encoder-only
clips/s (after a warm-up batch that compiles) and the structure-clip cost per clip.
"""
import argparse
import os
import sys
import time

import numpy as np

from data_pipelines import clip_sources, pretokenize, structure


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_clips", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--video_tokenizer", default=None)
    parser.add_argument("--audio_tokenizer", default=None)
    args = parser.parse_args()
    if args.video_tokenizer:
        factory = pretokenize.TokenizerPaths(args.video_tokenizer, args.audio_tokenizer)
    else:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "data_pipelines"))
        from tiny_tokenizers_for_data import make_tiny_tokenizers as factory
    encoder = pretokenize.TokenEncoder(factory, text_length=16, batch_size=args.batch_size)
    encoder.setup()
    clips = [u.produce()[0][0] for u in clip_sources.demo_units({"train": args.num_clips}, seed=0)]
    encoder.encode(clips[:args.batch_size])  # compile
    start = time.time()
    for i in range(0, len(clips), args.batch_size):
        encoder.encode(clips[i:i + args.batch_size])
    seconds = time.time() - start
    print(f"pretokenize: {len(clips)} clips in {seconds:.2f} s = {len(clips) / seconds:.1f} clips/s")
    start = time.time()
    for clip in clips:
        structure.structure_clip(clip.video)
    print(f"structure clip (flow + depth substitute): {(time.time() - start) / len(clips) * 1e3:.1f} ms/clip")


if __name__ == "__main__":
    main()
