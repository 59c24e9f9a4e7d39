"""One switch for how captions reach the LM: T5 embeddings or caption tokens.

    encoder = make_text_encoder(config.text)
    # config.text.kind == "t5":     T5Encoder (config.text.t5_path: HF or t5x/Orbax dir;
    #                               optional t5_param_dtype 'bfloat16' halves weight memory);
    #                               the data pipeline precomputes float [n, dim] embeddings.
    # config.text.kind == "tokens": CaptionTokenizer (config.text.tokenizer_path: a .model
    #                               file); the LM embeds int ids in its text vocabulary.

Both have `encode(captions, max_length) -> (array [B, L, ...], bool mask [B, L])`:
float32 [B, L, dim] for 't5', int32 [B, L] for 'tokens'.
"""
from __future__ import annotations

from .caption_tokenizer import CaptionTokenizer
from .t5 import T5Encoder

TEXT_ENCODER_KINDS = ("t5", "tokens")


def make_text_encoder(text_config) -> T5Encoder | CaptionTokenizer:
    """text_config: a ConfigDict/mapping with `kind` and `t5_path` or `tokenizer_path`."""
    if "kind" not in text_config:
        raise ValueError(f"config.text has no 'kind': expected one of {TEXT_ENCODER_KINDS}")
    kind = text_config["kind"]
    if kind == "t5":
        path = text_config.get("t5_path") or ""
        if not path:
            raise ValueError("config.text.t5_path is empty: kind 't5' needs a T5 checkpoint directory "
                             "(Hugging Face or t5x/Orbax, with spiece.model); nothing is downloaded")
        return T5Encoder.load(path, param_dtype=text_config.get("t5_param_dtype") or "float32")
    if kind == "tokens":
        path = text_config.get("tokenizer_path") or ""
        if not path:
            raise ValueError("config.text.tokenizer_path is empty: kind 'tokens' needs a caption "
                             "sentencepiece model (CaptionTokenizer.train writes one)")
        return CaptionTokenizer.load(path)
    raise ValueError(f"config.text.kind={kind!r}: expected one of {TEXT_ENCODER_KINDS}")
