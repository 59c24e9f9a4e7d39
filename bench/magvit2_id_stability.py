"""How repeatable are a video tokenizer's ids on the embedded demo? Prints the figures.

    python bench/magvit2_id_stability.py --checkpoint_dir=<workdir>/video_tokenizer/checkpoints [--num_clips=256]

Every demo photo has one fixed background, so a latent cell whose pixels are that background
in every clip should get the same id in every clip. For each photo this takes the most common
id of each first-frame cell over the clips with that photo and prints the share of cells
that get it, split into cells at least 8 px from the digit's box ('far': their own pixels
are pure background; only the digit elsewhere in the frame can change their id) and the
rest ('near'). Far-cell agreement near 1 means ids depend on the content around them, which
is what lets a small LM learn a photo's background and a digit's shape from few examples.

It then follows each clip through time. Between consecutive latent frames (each covers 4
pixel frames) it prints the share of cells that keep their id while the digit stays at
least 2 cells away from them ('far cells keep their id'; 1 would mean the digit moving
elsewhere never touches them), and the share of cells on the digit whose id equals the id
one keyframe-step back along the digit's motion ('digit cells move with the digit'; 1
would make motion a shifted copy of the previous latent frame, the easiest thing for an LM
to continue).
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
    all_ids = tokenizer.encode(video)  # [N, t, h, w]
    ids = all_ids[:, 0]  # first latent frame
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
    far_kept, shifted = through_time(clips, all_ids, cell)
    print(f'between latent frames: far cells keep their id {far_kept:.3f}; '
          f'digit cells move with the digit {shifted:.3f}')


def _box_cells(x: float, y: float, size: float, grow: int, grid: tuple[int, int]) -> np.ndarray:
    """bool [h, w]: the cells of the box at (x, y) of side `size` (cell units), grown by `grow` cells."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing='ij')
    return ((cols >= x - grow) & (cols <= x + size - 1 + grow) &
            (rows >= y - grow) & (rows <= y + size - 1 + grow))


def through_time(clips, ids: np.ndarray, cell: int) -> tuple[float, float]:
    """(far-cell id kept, digit-cell id shifted along the motion) over latent frames 2.. of `ids`.

    ids [N, t, h, w]; latent frame k >= 1 covers pixel frames 4k-3 .. 4k, so the digit's
    keyframe step is positions[4k] - positions[4k-4] (frame 1 is skipped: its predecessor
    encodes one frame, not four). Steps with a bounce inside are skipped for the shift.
    """
    stride = 4
    kept, shifted = [], []
    for clip, z in zip(clips, ids):
        pos = np.asarray(clip.truth['positions'], np.float64) / cell
        size = clip.truth['sprite_size'] / cell
        bounces = set(clip.truth['bounce_frames'])
        for k in range(2, z.shape[0]):
            span = pos[stride * k - 2 * stride + 1:stride * k + 1]  # both latent frames' pixel frames
            near = np.zeros(z.shape[1:], bool)
            for x, y in span:
                near |= _box_cells(x, y, size, 2, z.shape[1:])
            kept.append(z[k][~near] == z[k - 1][~near])
            if bounces & set(range(stride * k - stride, stride * k + 1)):
                continue
            dx, dy = np.round(pos[stride * k] - pos[stride * k - stride]).astype(int)
            on_digit = _box_cells(*pos[stride * k], size, 0, z.shape[1:])
            for i, j in zip(*np.nonzero(on_digit)):
                if 0 <= i - dy < z.shape[1] and 0 <= j - dx < z.shape[2]:
                    shifted.append(z[k, i, j] == z[k - 1, i - dy, j - dx])
    return float(np.concatenate(kept).mean()), float(np.mean(shifted))


if __name__ == '__main__':
    main()
