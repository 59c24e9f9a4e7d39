import numpy as np
import pytest

from vp_jax import tasks
from vp_jax.vocabulary import Vocabulary

V = Vocabulary(visual_bits=2, audio_levels=1, audio_codebook_size=2, text_vocab_size=4)


def tok(name):
    return V.token(name)


def test_i2v_matches_the_worked_example():
    inputs, targets = tasks.build_sequence(
        tasks.get_task("i2v"), {"video_tokens": np.array([[[3]], [[1]]])}, V)
    assert inputs.tolist() == [tok("<bos>"), V.task_token(3), tok("<bov_i>"), 259, tok("<eov_i>")]
    assert targets.tolist() == [tok("<bov_o>"), 257, tok("<eov_o>"), tok("<eos>")]


def test_t2v_layout_token_by_token():
    fields = {"text_tokens": np.array([2, 0]), "video_tokens": np.array([[[1, 2]]])}
    inputs, targets = tasks.build_sequence(tasks.get_task("t2v"), fields, V)
    text = V.text_range[0]
    assert inputs.tolist() == [tok("<bos>"), V.task_token(1), tok("<bot_i>"), text + 2, text,
                               tok("<eot_i>")]
    assert targets.tolist() == [tok("<bov_o>"), 257, 258, tok("<eov_o>"), tok("<eos>")]


def test_text_to_image_omits_end_markers_so_generation_can_run_on():
    fields = {"text_tokens": np.array([1]), "video_tokens": np.zeros([3, 1, 1], np.int64)}
    _, targets = tasks.build_sequence(tasks.get_task("t2i"), fields, V)
    assert targets.tolist() == [tok("<bov_o>"), 256]


def test_dropped_text_keeps_markers_but_no_caption():
    fields = {"text_tokens": np.array([1, 2, 3]), "video_tokens": np.zeros([1, 1, 1], np.int64)}
    inputs, _ = tasks.build_sequence(tasks.get_task("t2v"), fields, V, drop_text=True)
    assert inputs.tolist() == [tok("<bos>"), V.task_token(1), tok("<bot_i>"), tok("<eot_i>")]


def test_t5_text_becomes_embedding_slots():
    fields = {"text_embeddings": np.zeros([3, 8], np.float32), "video_tokens": np.zeros([1, 1, 1], np.int64)}
    inputs, _ = tasks.build_sequence(tasks.get_task("t2v"), fields, V)
    assert inputs.tolist()[3:6] == [tok("<text_emb>")] * 3


def test_video_to_audio_puts_level_major_audio_in_the_output():
    fields = {"video_tokens": np.array([[[0]]]), "audio_tokens": np.array([[1, 0, 1]])}
    inputs, targets = tasks.build_sequence(tasks.get_task("video_to_audio"), fields, V)
    a = V.audio_range[0]
    assert inputs.tolist()[2:] == [tok("<bov_i>"), 256, tok("<eov_i>")]
    assert targets.tolist() == [tok("<boa_o>"), a + 1, a, a + 1, tok("<eoa_o>"), tok("<eos>")]


def test_portrait_outputs_get_the_res_marker():
    fields = {"video_tokens": np.zeros([1, 2, 1], np.int64)}
    inputs, _ = tasks.build_sequence(tasks.get_task("unconditional"), fields, V)
    assert inputs.tolist() == [tok("<bos>"), V.task_token(0), tok("<res>")]


def test_missing_field_is_a_clear_error():
    with pytest.raises(ValueError, match="needs field 'audio_tokens'"):
        tasks.build_sequence(tasks.get_task("video_to_audio"), {"video_tokens": np.zeros([1, 1, 1])}, V)
    with pytest.raises(ValueError, match="unknown task 'v2v'"):
        tasks.get_task("v2v")


@pytest.mark.parametrize("task", tasks.TASKS, ids=lambda t: t.name)
def test_constraints_and_split_invert_the_output_of_every_task(task):
    vocab = Vocabulary(visual_bits=3, audio_levels=2, audio_codebook_size=4, text_vocab_size=6)
    geometry = tasks.Geometry(video_latent_shape=(3, 2, 2), audio_shape=(2, 9), text_length=4)
    rng = np.random.default_rng(task.index)
    fields = geometry.dummy_fields()
    for name in ("video_tokens", "inpaint_tokens", "outpaint_tokens", "structure_tokens"):
        fields[name] = rng.integers(0, 8, (3, 2, 2))
    fields["audio_tokens"] = rng.integers(0, 4, (2, 9))
    _, targets = tasks.build_sequence(task, fields, vocab)
    forced, low, high = tasks.output_constraints(task, geometry, vocab)
    free = forced < 0
    assert np.all(targets[~free] == forced[~free])
    assert np.all((targets[free] >= low[free]) & (targets[free] < high[free]))
    pieces = tasks.split_output(task, targets, geometry, vocab)
    for source, ids in pieces.items():
        np.testing.assert_array_equal(ids, tasks.SOURCES[source][1](fields))


def test_continuation_splits_video_and_audio_at_the_same_time():
    geometry = tasks.Geometry(video_latent_shape=(5, 1, 1), audio_shape=(1, 17), text_length=0)
    fields = geometry.dummy_fields()
    assert tasks.SOURCES["video_head"][1](fields).shape[0] == 3  # pixel frames 0..8 of 17
    assert tasks.SOURCES["audio_head"][1](fields).shape[1] == 9  # 17 * 9 // 17


def test_sequence_lengths_follow_geometry():
    vocab = Vocabulary(visual_bits=10, audio_levels=4, audio_codebook_size=256, text_vocab_size=512)
    geometry = tasks.Geometry((5, 8, 8), (4, 53), 16)
    assert tasks.sequence_lengths(tasks.get_task("t2v"), geometry, vocab) == (2 + 16 + 2, 320 + 3)
    assert tasks.model_length(tasks.get_task("t2v"), geometry, vocab) == 20 + 323 - 1
