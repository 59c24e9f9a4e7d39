"""Caption sentencepiece tokens: the offline text path for the demo and users without T5."""
import os

import numpy as np
import pytest

from vp_tokenizers.text import CaptionTokenizer, make_text_encoder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAPTIONS = [f"the digit {d} moves {m}" for d in "0123456789" for m in ("left", "right", "up", "down")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("captions") / "captions.model")
    return CaptionTokenizer.train(CAPTIONS, vocab_size=64, model_path=path)


def test_captions_round_trip_through_ids(tokenizer):
    ids, mask = tokenizer.encode(CAPTIONS[:5], max_length=48)
    assert ids.shape == mask.shape == (5, 48) and ids.dtype == np.int32 and mask.dtype == bool
    assert ids.min() >= 0 and ids.max() < tokenizer.vocab_size <= 64
    assert tokenizer.decode(ids) == CAPTIONS[:5]


def test_padding_follows_eos_and_is_masked(tokenizer):
    ids, mask = tokenizer.encode(["the digit 3 moves up"], max_length=32)
    length = int(mask.sum())
    assert ids[0, length - 1] == 2 and not ids[0, length:].any() and not mask[0, length:].any()


def test_long_captions_are_truncated_and_keep_eos(tokenizer):
    ids, mask = tokenizer.encode([" ".join(CAPTIONS)], max_length=8)
    assert mask.all() and ids[0, -1] == 2


def test_count_tokens_is_the_uncut_length_with_eos(tokenizer):
    ids, mask = tokenizer.encode(CAPTIONS[:3], max_length=48)
    assert tokenizer.count_tokens(CAPTIONS[:3]) == mask.sum(axis=1).tolist()
    assert tokenizer.count_tokens([" ".join(CAPTIONS)])[0] > 8


def test_demo_captions_fit_the_demo_text_length(tmp_path):
    """The main job's caption tokenizer keeps every demo caption whole within its text_length
    (a unigram model of this small corpus needs ~40 near-character pieces per caption)."""
    from data_pipelines.demo.clips import demo_clip
    from vp_jax.config import load_config_file
    config = load_config_file(os.path.join(REPO, "experiments", "t2v_base.py"), "")
    captions = [demo_clip("train", i, seed=0).caption for i in range(300)]
    settings = config.demo.caption_tokenizer
    tokenizer = CaptionTokenizer.train(captions, settings.vocab_size, str(tmp_path / "c.model"),
                                       model_type=settings.model_type)
    assert max(tokenizer.count_tokens(captions)) <= config.demo.shards.text_length
    held_out = [demo_clip("test", i, seed=0).caption for i in range(50)]
    ids, _ = tokenizer.encode(held_out, config.demo.shards.text_length)
    assert tokenizer.decode(ids) == held_out


def test_loaded_tokenizer_encodes_like_the_trained_one(tokenizer):
    loaded = make_text_encoder({"kind": "tokens", "tokenizer_path": tokenizer.model_path})
    assert isinstance(loaded, CaptionTokenizer)
    np.testing.assert_array_equal(loaded.encode(CAPTIONS, 12)[0], tokenizer.encode(CAPTIONS, 12)[0])


def test_bad_inputs_are_rejected(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="sequence of str"):
        tokenizer.encode("one caption, not a list", 8)
    with pytest.raises(ValueError, match=r"outside \[0, "):
        tokenizer.decode(np.array([[tokenizer.vocab_size]]))
    with pytest.raises(FileNotFoundError, match="nothing.model"):
        CaptionTokenizer.load(str(tmp_path / "nothing.model"))
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="corrupt.model"):
        CaptionTokenizer.load(str(corrupt))
    with pytest.raises(ValueError, match="config.text.kind='clip'"):
        make_text_encoder({"kind": "clip"})
