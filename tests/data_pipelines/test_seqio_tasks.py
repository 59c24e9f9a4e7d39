"""SeqIO tasks: one per registry task, each emitting the paper's layout token by token."""
import numpy as np
import pytest

from data_pipelines import schema, testing
from data_pipelines.seqio_tasks import ShardDataset, register_seqio_tasks
from vp_jax.tasks import TASKS

VOCAB = testing.DEFAULT_VOCAB
TASK = {t.name: 64 + t.index for t in TASKS}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("shards"))
    testing.write_synthetic_shards(directory, num_examples=16, silent_every=3)
    return directory


@pytest.fixture(scope="module")
def dataset(shards):
    return ShardDataset.open(shards)


@pytest.fixture(scope="module")
def clips(dataset):
    """Raw fields of every validation clip by clip_id, read straight from the TFRecords."""
    ds = dataset.read("validation", [f for f in dataset.spec.fields if f != "clip_id"])
    return {c["clip_id"].decode(): c for c in ds.as_numpy_iterator()}


def m(name):
    return [VOCAB.token(name)]


def V(x):  # visual ids, raster order
    return list(VOCAB.visual_range[0] + np.asarray(x).reshape(-1))


def A(x):  # audio ids, level-major, each level in its own block
    return [int(VOCAB.audio_level_range(level)[0] + c) for level in range(x.shape[0]) for c in x[level]]


def T(x):
    return list(VOCAB.text_range[0] + np.asarray(x))


def expected_layout(name, c):
    """The VideoPoet layout written out by hand for the synthetic geometry: 3 latent frames
    (continuation keeps the first 2), 6 audio frames (av_continuation keeps the first 3)."""
    video, audio, text = c["video_tokens"], c["audio_tokens"], c["text_tokens"]
    head = m("<bos>") + [TASK[name]]
    text_in = m("<bot_i>") + T(text) + m("<eot_i>")
    video_out = m("<bov_o>") + V(video) + m("<eov_o>") + m("<eos>")
    return {
        "unconditional": (head, video_out),
        "t2v": (head + text_in, video_out),
        "t2i": (head + text_in, m("<bov_o>") + V(video[:1])),
        "i2v": (head + m("<bov_i>") + V(video[:1]) + m("<eov_i>"),
                m("<bov_o>") + V(video[1:]) + m("<eov_o>") + m("<eos>")),
        "continuation": (head + m("<bov_i>") + V(video[:2]) + m("<eov_i>"),
                         m("<bov_o>") + V(video[2:]) + m("<eov_o>") + m("<eos>")),
        "inpainting": (head + m("<bov_i>") + V(c["inpaint_tokens"]) + m("<eov_i>"), video_out),
        "outpainting": (head + m("<bov_i>") + V(c["outpaint_tokens"]) + m("<eov_i>"), video_out),
        "stylization": (head + text_in + m("<bov_i>") + V(c["structure_tokens"]) + m("<eov_i>"),
                        video_out),
        "audio_to_video": (head + m("<boa_i>") + A(audio) + m("<eoa_i>"), video_out),
        "video_to_audio": (head + m("<bov_i>") + V(video) + m("<eov_i>"),
                           m("<boa_o>") + A(audio) + m("<eoa_o>") + m("<eos>")),
        "av_continuation": (
            head + m("<bov_i>") + V(video[:2]) + m("<eov_i>") + m("<boa_i>") + A(audio[:, :3])
            + m("<eoa_i>"),
            m("<bov_o>") + V(video[2:]) + m("<eov_o>") + m("<boa_o>") + A(audio[:, 3:])
            + m("<eoa_o>") + m("<eos>")),
    }[name]


def test_every_registry_task_gets_one_seqio_task(dataset):
    tasks = register_seqio_tasks(dataset)
    assert list(tasks) == [t.name for t in TASKS]
    assert len({t.name for t in tasks.values()}) == len(TASKS)


@pytest.mark.parametrize("name", [t.name for t in TASKS])
def test_task_emits_the_paper_layout_token_by_token(dataset, clips, name):
    task = register_seqio_tasks(dataset, [name])[name]
    examples = list(task.get_dataset(None, split="validation", shuffle=False, seed=0)
                    .take(3).as_numpy_iterator())
    assert examples
    for ex in examples:
        inputs, targets = expected_layout(name, clips[ex["clip_id"].decode()])
        assert ex["inputs"].tolist() == inputs
        assert ex["targets"].tolist() == targets
        assert ex["task_index"] == TASK[name] - 64


def test_audio_tasks_skip_clips_without_sound(dataset, clips):
    tasks = register_seqio_tasks(dataset, ["t2v", "video_to_audio"])
    count = {n: sum(1 for _ in t.get_dataset(None, split="validation", shuffle=False, seed=0))
             for n, t in tasks.items()}
    silent = sum(c["audio_tokens"].size == 0 for c in clips.values())
    assert silent > 0
    assert count["t2v"] == len(clips)
    assert count["video_to_audio"] == len(clips) - silent


def test_text_dropout_empties_the_caption_of_a_seeded_share(dataset):
    task = register_seqio_tasks(dataset, ["t2v"], text_dropout=0.5)["t2v"]

    def dropped(seed):
        ds = task.get_dataset(None, split="train", shuffle=False, seed=seed)
        return [ex["inputs"][3] == VOCAB.token("<eot_i>") for ex in ds.as_numpy_iterator()]

    first = dropped(seed=1)
    assert first == dropped(seed=1)
    assert 0 < sum(first) < len(first)


def test_task_whose_field_the_dataset_lacks_is_an_error_naming_both(tmp_path):
    testing.write_synthetic_shards(str(tmp_path), num_examples=4, num_shards=1)
    spec = schema.ShardSpec.read(str(tmp_path))
    spec.fields.remove("audio_tokens")
    spec.write(str(tmp_path))
    dataset = ShardDataset.open(str(tmp_path))
    assert "video_to_audio" not in [t.name for t in dataset.supported_tasks()]
    with pytest.raises(ValueError, match="video_to_audio.*audio_tokens"):
        register_seqio_tasks(dataset, ["video_to_audio"])


def test_t5_mode_fills_text_slots_and_gives_textless_tasks_empty_embeddings(tmp_path):
    testing.write_synthetic_shards(str(tmp_path), num_examples=4, text_mode="t5", num_shards=1)
    dataset = ShardDataset.open(str(tmp_path))
    assert dataset.text_mode == "t5" and dataset.text_embedding_dim == testing.TEXT_EMBEDDING_DIM
    tasks = register_seqio_tasks(dataset, ["t2v", "unconditional"])
    t2v = next(tasks["t2v"].get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    slots = int(np.sum(t2v["inputs"] == VOCAB.token("<text_emb>")))
    table = testing.word_embeddings()
    distance = np.abs(t2v["text_embeddings"][:, None, :] - table[None]).sum(-1)
    assert slots == t2v["text_embeddings"].shape[0] in (5, 6)
    assert np.allclose(distance.min(axis=1), 0.0)  # each row is a caption word's embedding
    assert table[distance.argmin(axis=1)[0]].tolist() == table[testing.WORDS.index("the")].tolist()
    uncond = next(tasks["unconditional"].get_dataset(None, split="validation", shuffle=False)
                  .as_numpy_iterator())
    assert uncond["text_embeddings"].shape == (0, testing.TEXT_EMBEDDING_DIM)


def test_opening_a_directory_without_spec_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ShardDataset.open(str(tmp_path))
