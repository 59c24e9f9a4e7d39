import numpy as np
import pytest

from vp_jax.vocabulary import NUM_SPECIAL, Modality, Vocabulary


def small_vocab():
    return Vocabulary(visual_bits=2, audio_levels=2, audio_codebook_size=3, text_vocab_size=5)


def test_ranges_are_contiguous_and_disjoint_in_documented_order():
    v = small_vocab()
    assert v.visual_range == (NUM_SPECIAL, NUM_SPECIAL + 4)
    assert v.audio_range == (260, 266)
    assert v.audio_level_range(0) == (260, 263) and v.audio_level_range(1) == (263, 266)
    assert v.text_range == (266, 271)
    assert v.size == 271 and v.padded_size == 384


def test_audio_is_flattened_level_major_with_a_block_per_level():
    v = small_vocab()
    flat = v.audio_to_vocab(np.array([[0, 2], [1, 0]]))
    np.testing.assert_array_equal(flat, [260, 262, 264, 263])
    np.testing.assert_array_equal(v.vocab_to_audio(flat), [[0, 2], [1, 0]])


def test_round_trips_for_every_modality_with_batch_dims():
    v = Vocabulary(visual_bits=10, audio_levels=4, audio_codebook_size=1024, text_vocab_size=100)
    rng = np.random.default_rng(0)
    vis = rng.integers(0, 1024, (2, 5, 4, 4))
    aud = rng.integers(0, 1024, (2, 4, 7))
    txt = rng.integers(0, 100, (2, 9))
    np.testing.assert_array_equal(v.vocab_to_visual(v.visual_to_vocab(vis)), vis)
    np.testing.assert_array_equal(v.vocab_to_audio(v.audio_to_vocab(aud)), aud)
    np.testing.assert_array_equal(v.vocab_to_text(v.text_to_vocab(txt)), txt)


def test_out_of_range_ids_name_the_field_and_range():
    v = small_vocab()
    with pytest.raises(ValueError, match=r"video_tokens: ids must lie in \[0, 4\)"):
        v.visual_to_vocab(np.array([0, 4]), "video_tokens")
    with pytest.raises(ValueError, match="level 1"):
        v.vocab_to_audio(np.array([260, 261, 262, 262]))  # level-1 slot holds a level-0 id
    with pytest.raises(ValueError, match="2 levels"):
        v.audio_to_vocab(np.zeros([3, 4], np.int64))


def test_modality_of_classifies_every_range():
    v = small_vocab()
    ids = np.array([0, 1, v.token("<text_emb>"), 256, 260, 266, 64])
    np.testing.assert_array_equal(
        v.modality_of(ids),
        [Modality.PAD, Modality.SPECIAL, Modality.TEXT_EMBEDDING, Modality.VISUAL,
         Modality.AUDIO, Modality.TEXT, Modality.SPECIAL])


def test_json_round_trip_and_missing_field_error():
    v = small_vocab()
    assert Vocabulary.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="missing field"):
        Vocabulary.from_dict({"visual_bits": 2}, source="spec.json")


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="visual_bits"):
        Vocabulary(visual_bits=0, audio_levels=1, audio_codebook_size=1, text_vocab_size=0)
    with pytest.raises(ValueError, match="audio_levels"):
        Vocabulary(visual_bits=2, audio_levels=-1, audio_codebook_size=1, text_vocab_size=0)
