"""How repeatable are a video tokenizer's ids on the embedded demo? Prints the figures.

    python bench/magvit2_id_stability.py --checkpoint_dir=<workdir>/video_tokenizer/checkpoints [--num_clips=256]

Every demo photo has one fixed background, so a latent cell whose pixels are that background
in every clip should get the same id in every clip. For each photo this takes the most common
id of each first-frame cell over the clips with that photo and prints the share of cells
that get it, split into cells at least 8 px from the digit's box ('far': their own pixels
are pure background; only the digit elsewhere in the frame can change their id) and the
rest ('near'). Far-cell agreement near 1 means ids depend on the content around them, which
is what lets a small LM learn a photo's background and a digit's shape from few examples.
"""
from __future__ import annotations

import argparse
import collections

import numpy as np

from data_pipelines.demo.clips import demo_clip
from vp_tokenizers.magvit2.api import VideoTokenizer

FAR_PIXELS = 8


def far_from_sprite(truth: dict, cell: int, grid: tuple[int, int]) -> np.ndarray:
    """bool [h, w]: first-frame cells at least FAR_PIXELS from the sprite's box."""
    x, y = truth['positions'][0]
    size = truth['sprite_size']
    rows, cols = np.meshgrid(np.arange(grid[0]) * cell, np.arange(grid[1]) * cell, indexing='ij')
    dy = np.maximum(np.maximum(y - (rows + cell), rows - (y + size)), 0)
    dx = np.maximum(np.maximum(x - (cols + cell), cols - (x + size)), 0)
    return np.maximum(dx, dy) >= FAR_PIXELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint_dir', required=True)
    parser.add_argument('--num_clips', type=int, default=256)
    parser.add_argument('--split', default='validation')
    args = parser.parse_args()

    tokenizer = VideoTokenizer.load(args.checkpoint_dir, batch_size=16)
    clips = [demo_clip(args.split, i, seed=0) for i in range(args.num_clips)]
    video = np.stack([c.video for c in clips])
    ids = tokenizer.encode(video)[:, 0]  # first latent frame [N, h, w]
    cell = video.shape[2] // ids.shape[1]
    photos = np.array([c.truth['background'] for c in clips])
    far = np.stack([far_from_sprite(c.truth, cell, ids.shape[1:]) for c in clips])
    agrees = np.zeros(ids.shape, bool)
    for photo in set(photos):
        rows = photos == photo
        for i, j in np.ndindex(*ids.shape[1:]):
            mode = collections.Counter(ids[rows, i, j].tolist()).most_common(1)[0][0]
            agrees[rows, i, j] = ids[rows, i, j] == mode
    print(f'clips={len(clips)} far_cells={int(far.sum())} near_cells={int((~far).sum())}')
    print(f'far-cell agreement with the photo\'s usual id: {agrees[far].mean():.3f}')
    print(f'near-cell agreement: {agrees[~far].mean():.3f}')
    print(f'distinct ids: {len(np.unique(ids))} of {2 ** tokenizer.bits}')


if __name__ == '__main__':
    main()
