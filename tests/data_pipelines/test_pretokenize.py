"""Pre-tokenization with tiny real tokenizers: every field, right shapes, readable by tf.data."""
import json

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import beam_pipeline, clip_sources, masks, pretokenize, schema, structure
from data_pipelines.demo import demo_clip
from tiny_tokenizers_for_data import make_tiny_tokenizers


@pytest.fixture(scope="module")
def encoder():
    enc = pretokenize.TokenEncoder(make_tiny_tokenizers, text_length=12, batch_size=4)
    enc.setup()
    return enc


def test_encoded_example_holds_every_field_with_tokenizer_shapes(encoder):
    clips = [clip_sources.DemoUnit("train", i, seed=0).produce()[0][0] for i in range(2)]
    (record, info), _ = encoder.encode(clips)
    got = schema.parse_example(tf.constant(record), tuple(schema.ALL_FIELDS[:-1]) + ("metadata_json",))
    assert got["video_tokens"].shape == (5, 4, 4)
    for field in ("inpaint_tokens", "outpaint_tokens", "structure_tokens"):
        assert got[field].shape == (5, 4, 4)
    assert got["audio_tokens"].shape == (2, 106)
    vocab = encoder.tokenizers.text.WORDS
    expected = [vocab.index(w) if w in vocab else 0 for w in clips[0].caption.split()]
    assert got["text_tokens"].numpy().tolist() == expected
    meta = json.loads(got["metadata_json"].numpy())
    assert meta["truth"] == demo_clip("train", 0, seed=0).truth
    np.testing.assert_array_equal(got["video_tokens"], encoder.tokenizers.video.encode(clips[0].video[None])[0])
    assert info == {"frames": 17, "video_latent_shape": [5, 4, 4], "audio_shape": [2, 106], "caption_tokens": 10}


def test_masks_grey_out_the_centre_or_the_border_on_token_boundaries():
    video = np.full((1, 32, 32, 3), 9, np.uint8)
    inpaint, outpaint = masks.inpaint_clip(video), masks.outpaint_clip(video)
    assert (inpaint[0, 8:24, 8:24] == masks.MASK_VALUE).all() and (inpaint[0, :8] == 9).all()
    assert (outpaint[0, 8:24, 8:24] == 9).all() and (outpaint[0, :8] == masks.MASK_VALUE).all()


def test_structure_clip_encodes_motion_in_flow_channels_and_uses_a_given_depth_model():
    video = np.zeros((3, 32, 32, 3), np.uint8)
    for t in range(3):
        video[t, 10:20, 4 + 2 * t:14 + 2 * t] = 255  # a square moving right 2 px/frame
    s = structure.structure_clip(video)
    box = (slice(11, 19), slice(8, 14))
    assert s[1][box][..., 0].mean() > 140  # dx > 0 where the square moves
    assert abs(float(s[1][box][..., 1].mean()) - 128) < 10  # dy ~ 0
    depth_fn, name = structure.load_depth_fn(lambda v: np.tile(np.arange(32.0), (len(v), 32, 1)))
    assert structure.structure_clip(video, depth_fn)[0, 0, :, 2].tolist() == \
        np.rint(np.arange(32) / 31 * 255).tolist()
    with pytest.raises(ValueError, match="module:function"):
        structure.load_depth_fn("no_colon_here")


def test_images_get_video_tokens_only(encoder):
    clip = clip_sources.Clip("img-0", "train", np.zeros((1, 32, 32, 3), np.uint8), None, "the digit one", {})
    (record, info), = encoder.encode([clip])
    names = set(tf.train.Example.FromString(record).features.feature)
    assert "video_tokens" in names and "text_tokens" in names
    assert not names & {"inpaint_tokens", "outpaint_tokens", "structure_tokens", "audio_tokens"}
    assert info["video_latent_shape"] == [1, 4, 4]


def test_demo_shards_and_spec_load_with_plain_tf_data(tmp_path, encoder):
    units = clip_sources.demo_units({"train": 6, "test": 2}, seed=0)
    result = beam_pipeline.run_pipeline(units, encoder, str(tmp_path), {"train": 2, "test": 1})
    spec = pretokenize.write_spec(str(tmp_path), encoder, result)
    assert spec.splits["train"]["num_examples"] == 6 and spec.splits["test"]["num_examples"] == 2
    assert spec.geometry["video_latent_shape"] == [5, 4, 4] and spec.geometry["audio_shape"] == [2, 106]
    assert spec.vocabulary["visual_bits"] == 6 and spec.vocabulary["audio_levels"] == 2
    assert spec.tokenizers["video"] == encoder.tokenizers.video.checkpoint_id
    assert spec.tokenizers["depth"] == structure.SUBSTITUTE_DEPTH_NAME
    # Plain tf.data, no vp-jax code: int64 lists + their shapes.
    files = [str(tmp_path / f) for f in json.loads((tmp_path / "spec.json").read_text())["splits"]["train"]["files"]]
    desc = {"clip_id": tf.io.FixedLenFeature([], tf.string),
            "video_tokens": tf.io.VarLenFeature(tf.int64),
            "video_tokens_shape": tf.io.FixedLenFeature([3], tf.int64)}
    rows = list(tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, desc)))
    assert len(rows) == 6
    assert all(r["video_tokens_shape"].numpy().tolist() == [5, 4, 4] for r in rows)
    assert sorted(r["clip_id"].numpy().decode() for r in rows) == [
        f"demo-train-s0-{i:07d}" for i in range(6)]
    assert schema.ShardSpec.read(str(tmp_path)).fields == spec.fields


def test_spec_reports_the_longest_caption_and_warns_when_text_length_cuts_it(tmp_path, encoder, capsys):
    units = clip_sources.demo_units({"train": 3}, seed=0)
    result = beam_pipeline.run_pipeline(units, encoder, str(tmp_path / "fits"), {"train": 1})
    assert pretokenize.write_spec(str(tmp_path / "fits"), encoder, result).extra["longest_caption_tokens"] == 10
    assert "WARNING" not in capsys.readouterr().out
    short = pretokenize.TokenEncoder(make_tiny_tokenizers, text_length=6)
    pretokenize.write_spec(str(tmp_path / "fits"), short, result)
    assert "needs 10 text tokens (with EOS); text_length=6 cuts" in capsys.readouterr().out
