"""The video-token digit probe on hand-made demo-style shards where the answer is known."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import schema
from data_pipelines.testing import DEFAULT_VOCAB
from vp_jax.evaluation import token_probe

LATENT = (3, 8, 8)  # 9 pixel frames, 32 px frames: 4 px cells, a 12 px sprite covers 3x3 cells


def _clip(rng: np.random.Generator, digit: int, readable: bool) -> tuple[np.ndarray, dict]:
    """Background id 0; the sprite's 3x3 cells carry digit-specific ids when `readable`."""
    tokens = np.zeros(LATENT, np.int64)
    col, row = (int(v) for v in rng.integers(0, 6, 2))
    step = int(rng.choice([-1, 1]))
    positions = []
    for k in range(LATENT[0]):
        c = int(np.clip(col + step * k, 0, 5))
        ids = (digit + 1 + np.arange(9).reshape(3, 3)) % 16 if readable else rng.integers(1, 16, (3, 3))
        tokens[k, row:row + 3, c:c + 3] = ids
        positions += [[4.0 * c, 4.0 * row]] * (4 if k else 1)
    return tokens, {"digit": digit, "positions": positions, "sprite_size": 12}


def _write_shards(directory: str, readable: bool, per_split: int = 60) -> str:
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("train", "test"):
        name = f"{split}-00000-of-00001.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for i in range(per_split):
                tokens, truth = _clip(rng, i % 10, readable)
                writer.write(schema.encode_example(
                    {"clip_id": f"{split}-{i}", "video_tokens": tokens,
                     "metadata_json": json.dumps({"truth": truth})}))
        splits[split] = {"files": [name], "num_examples": per_split}
    schema.ShardSpec(vocabulary=DEFAULT_VOCAB.to_dict(), tokenizers={"video": "hand-made"},
                     geometry={"video_latent_shape": list(LATENT), "audio_shape": [2, 6], "text_length": 6,
                               "text_embedding_dim": 0},
                     splits=splits, fields=["clip_id", "video_tokens", "metadata_json"]).write(directory)
    return directory


def test_readable_tokens_score_high(tmp_path):
    result = token_probe.run_probe(_write_shards(str(tmp_path), readable=True))
    assert result.accuracy == 1.0 and result.train_accuracy == 1.0
    assert result.num_train == result.num_eval == 60
    assert result.by_digit[3] == (6, 6)


def test_random_tokens_score_near_chance(tmp_path):
    result = token_probe.run_probe(_write_shards(str(tmp_path), readable=False))
    assert result.accuracy < 0.35


def test_window_follows_the_sprite_and_pads_outside_the_frame():
    tokens = np.arange(2 * 8 * 8).reshape(2, 8, 8)
    truth = {"digit": 1, "sprite_size": 12, "positions": [[0.0, 0.0]] + [[20.0, 8.0]] * 4}
    windows = token_probe.sprite_windows(tokens, truth, 32, "clip")
    assert windows.shape == (2, 5, 5)
    assert (windows[0, 0] == -1).all() and (windows[0, :, 0] == -1).all()  # ring outside the frame
    assert windows[0, 1, 1] == tokens[0, 0, 0]
    assert windows[1, 1, 1] == tokens[1, 2, 5]  # latent frame 1 at pixel frame 4: cell (row 2, col 5)
    assert (windows[1, :, 4] == -1).all()  # window cols are cells 4..8: cell 8 is past the edge


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="clip-7: metadata_json truth has no 'positions'"):
        token_probe.sprite_windows(np.zeros((2, 8, 8), int), {"digit": 1, "sprite_size": 12}, 32, "clip-7")
    with pytest.raises(ValueError, match="does not tile a 30-pixel frame"):
        token_probe.sprite_windows(np.zeros((2, 8, 8), int), {}, 30, "clip")
    with pytest.raises(FileNotFoundError, match="no shard spec"):
        token_probe.run_probe(str(tmp_path))


def test_command_line_prints_the_scores(tmp_path, capsys):
    token_probe.main(["--shards", _write_shards(str(tmp_path), readable=True), "--split", "test"])
    assert "test 1.000 (60 clips)" in capsys.readouterr().out
