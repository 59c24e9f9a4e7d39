"""The Flax T5 encoder loads real checkpoint layouts and matches transformers' T5EncoderModel.

torch and transformers are test-only: they build a tiny random reference model on disk.
"""
import json
import os

import numpy as np
import pytest
import sentencepiece as spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vp_tokenizers.text import T5Encoder, make_text_encoder  # noqa: E402

CAPTIONS = [
    "a red digit three bounces off the left wall and then keeps moving slowly to the right side",
    "the digit seven moves down",
    "zoom in on a photo of a cat",
]


def write_sentencepiece(directory):
    corpus = CAPTIONS * 10 + ["two circles spinning", "a blue square drifts up"] * 10
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=os.path.join(directory, "spiece"), vocab_size=60,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1)


def make_reference(directory, feed_forward_proj="gated-gelu"):
    """A random tiny T5EncoderModel saved as Hugging Face safetensors plus spiece.model."""
    os.makedirs(directory, exist_ok=True)
    write_sentencepiece(directory)
    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   feed_forward_proj=feed_forward_proj)
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(config).eval()
    with torch.no_grad():  # random, non-trivial norm scales (init is all ones)
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory, safe_serialization=True)
    return model


def reference_outputs(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long),
                     attention_mask=torch.tensor(mask.astype(np.int64))).last_hidden_state.numpy()


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu"])
def test_hf_safetensors_checkpoint_matches_transformers(tmp_path, feed_forward_proj):
    model = make_reference(str(tmp_path), feed_forward_proj)
    encoder = T5Encoder.load(str(tmp_path))
    embeddings, mask = encoder.encode(CAPTIONS, max_length=40)
    ids, _ = encoder.tokenize(CAPTIONS, 40)
    assert embeddings.shape == (3, 40, 32) and embeddings.dtype == np.float32 and encoder.dim == 32
    np.testing.assert_allclose(embeddings[mask], reference_outputs(model, ids, mask)[mask], atol=1e-4)


def test_bfloat16_weights_give_nearly_the_same_embeddings(tmp_path):
    make_reference(str(tmp_path))
    full, mask = T5Encoder.load(str(tmp_path)).encode(CAPTIONS, max_length=24)
    half, _ = T5Encoder.load(str(tmp_path), param_dtype="bfloat16").encode(CAPTIONS, max_length=24)
    assert half.dtype == np.float32
    assert np.abs(half - full)[mask].max() < 0.05 * np.abs(full[mask]).max()


def test_tokenization_is_sentencepiece_then_eos_then_padding(tmp_path):
    make_reference(str(tmp_path))
    encoder = T5Encoder.load(str(tmp_path))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    short, long = sp.encode(CAPTIONS[1]), sp.encode(CAPTIONS[0])
    max_length = len(long) - 2  # the long caption is cut, the short one (+ EOS) fits with padding
    assert len(short) + 1 < max_length
    ids, mask = encoder.tokenize(CAPTIONS, max_length)
    assert list(ids[1, :len(short) + 1]) == short + [1] and not ids[1, len(short) + 1:].any()
    assert mask[1].sum() == len(short) + 1
    assert ids[0, -1] == 1 and mask[0].all()  # truncated caption still ends with EOS


def t5x_tree_from_torch(model):
    """The parameter tree a t5x T5 v1.1 checkpoint holds (kernels are [in, out])."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    encoder = {"relpos_bias": {"rel_embedding": sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T},
               "encoder_norm": {"scale": sd["encoder.final_layer_norm.weight"]}}
    for i in range(model.config.num_layers):
        p = f"encoder.block.{i}.layer"
        encoder[f"layers_{i}"] = {
            "pre_attention_layer_norm": {"scale": sd[f"{p}.0.layer_norm.weight"]},
            "attention": {t: {"kernel": sd[f"{p}.0.SelfAttention.{h}.weight"].T}
                          for t, h in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))},
            "pre_mlp_layer_norm": {"scale": sd[f"{p}.1.layer_norm.weight"]},
            "mlp": {n: {"kernel": sd[f"{p}.1.DenseReluDense.{n}.weight"].T} for n in ("wi_0", "wi_1", "wo")},
        }
    decoder = {"decoder_norm": {"scale": np.ones(model.config.d_model, np.float32)}}
    return {"target": {"token_embedder": {"embedding": sd["shared.weight"]}, "encoder": encoder,
                       "decoder": decoder}, "state": {"step": np.asarray(1000)}}


def test_t5x_orbax_checkpoint_loads_with_config_inferred_from_shapes(tmp_path):
    import orbax.checkpoint as ocp
    model = make_reference(str(tmp_path / "hf"))
    t5x_dir = tmp_path / "t5x"
    os.makedirs(t5x_dir)
    write_sentencepiece(str(t5x_dir))  # beside the step directory, as t5x runs keep it
    ocp.PyTreeCheckpointer().save(str(t5x_dir / "checkpoint_1000"), t5x_tree_from_torch(model))
    encoder = T5Encoder.load(str(t5x_dir / "checkpoint_1000"))
    assert encoder.config.num_heads == 4 and encoder.config.d_kv == 8 and encoder.config.d_ff == 48
    embeddings, mask = encoder.encode(CAPTIONS, max_length=40)
    ids, _ = encoder.tokenize(CAPTIONS, 40)
    np.testing.assert_allclose(embeddings[mask], reference_outputs(model, ids, mask)[mask], atol=1e-4)


def test_broken_checkpoints_give_clear_errors(tmp_path):
    make_reference(str(tmp_path))
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    config["num_layers"] = 3
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="encoder.block.2"):
        T5Encoder.load(str(tmp_path))
    os.remove(tmp_path / "spiece.model")
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        T5Encoder.load(str(tmp_path))
    empty = tmp_path / "empty"
    os.makedirs(empty)
    write_sentencepiece(str(empty))
    with pytest.raises(ValueError, match="neither a Hugging Face T5 directory"):
        T5Encoder.load(str(empty))
    with pytest.raises(ValueError, match="config.text.t5_path is empty"):
        make_text_encoder({"kind": "t5", "t5_path": ""})


def test_make_text_encoder_returns_t5_for_kind_t5(tmp_path):
    make_reference(str(tmp_path))
    encoder = make_text_encoder({"kind": "t5", "t5_path": str(tmp_path)})
    assert isinstance(encoder, T5Encoder)
