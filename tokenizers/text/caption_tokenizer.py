"""Caption tokens from a sentencepiece model trained on the captions themselves.

Why: the embedded demo and users without a T5 checkpoint still need text conditioning. In
'tokens' mode the LM embeds these ids in its own vocabulary (vp_jax.vocabulary's text
range) instead of reading precomputed T5 embeddings.

    tok = CaptionTokenizer.train(captions, vocab_size=512, model_path="/tmp/captions.model")
    ids, mask = tok.encode(["the digit 3 moves left"], max_length=16)   # int32 [1, 16], bool [1, 16]
    tok.decode(ids)                                                       # ['the digit 3 moves left']
    tok.count_tokens(["the digit 3 moves left"])                          # [6]: pieces + EOS, uncut

Id layout: 0 = pad, 1 = unk, 2 = eos (appended to every caption, like T5), the rest are
pieces; every id is in [0, vocab_size). Training uses hard_vocab_limit=False, so a small
caption corpus may give fewer pieces than asked for: `vocab_size` is the real size.

The default model type is BPE. On a small, repetitive caption corpus (the demo's 2,000
captions over ~30 words) sentencepiece's unigram trainer collapses to ~50 near-character
pieces whatever vocab_size asks for, so a 10-word caption becomes ~40 tokens and a short
text_length cuts it after the first words; BPE at vocab_size=128 keeps every demo word
whole or in two pieces (<= 14 tokens with EOS).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
MODEL_TYPES = ("bpe", "unigram")


def _check_captions(captions, where: str) -> list[str]:
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"{where}: captions must be a sequence of str")
    return list(captions)


class CaptionTokenizer:
    def __init__(self, processor: spm.SentencePieceProcessor, model_path: str):
        self._sp = processor
        self.model_path = model_path
        self.vocab_size = processor.get_piece_size()
        if (processor.pad_id(), processor.unk_id(), processor.eos_id()) != (PAD_ID, UNK_ID, EOS_ID):
            raise ValueError(f"CaptionTokenizer: {model_path!r} has pad/unk/eos ids "
                             f"{(processor.pad_id(), processor.unk_id(), processor.eos_id())}, expected "
                             f"{(PAD_ID, UNK_ID, EOS_ID)}; train it with CaptionTokenizer.train")

    @classmethod
    def train(cls, captions: Sequence[str], vocab_size: int, model_path: str,
              model_type: str = "bpe") -> "CaptionTokenizer":
        """Trains a sentencepiece model on `captions`; writes `model_path` (a .model file)."""
        captions = [c for c in _check_captions(captions, "CaptionTokenizer.train") if c.strip()]
        if not captions:
            raise ValueError("CaptionTokenizer.train: no non-empty captions to train on")
        if vocab_size < 8:
            raise ValueError(f"CaptionTokenizer.train: vocab_size={vocab_size}, expected >= 8")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"CaptionTokenizer.train: model_type={model_type!r}, expected one of {MODEL_TYPES}")
        if not model_path.endswith(".model"):
            raise ValueError(f"CaptionTokenizer.train: model_path={model_path!r} must end in '.model'")
        os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(captions), model_prefix=model_path[: -len(".model")],
            vocab_size=vocab_size, model_type=model_type, hard_vocab_limit=False,
            pad_id=PAD_ID, unk_id=UNK_ID, eos_id=EOS_ID, bos_id=-1, character_coverage=1.0,
            num_threads=1, minloglevel=2)
        return cls.load(model_path)

    @classmethod
    def load(cls, model_path: str) -> "CaptionTokenizer":
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"CaptionTokenizer.load: {model_path!r} does not exist")
        processor = spm.SentencePieceProcessor()
        try:
            processor.load(model_path)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"CaptionTokenizer.load: {model_path!r} is not a sentencepiece model ({e})") from e
        return cls(processor, model_path)

    def encode(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """-> int32 ids [batch, max_length] in [0, vocab_size), bool mask [batch, max_length].

        Each caption is its pieces truncated to max_length - 1, then EOS, then PAD.
        """
        captions = _check_captions(captions, "CaptionTokenizer.encode")
        if max_length < 1:
            raise ValueError(f"CaptionTokenizer.encode: max_length={max_length}, expected >= 1")
        ids = np.full((len(captions), max_length), PAD_ID, np.int32)
        mask = np.zeros((len(captions), max_length), bool)
        for row, pieces in enumerate(self._sp.encode(captions)):
            pieces = pieces[: max_length - 1] + [EOS_ID]
            ids[row, : len(pieces)] = pieces
            mask[row, : len(pieces)] = True
        return ids, mask

    def count_tokens(self, captions: Sequence[str]) -> list[int]:
        """Tokens each caption needs uncut (pieces + EOS): what `encode` keeps whole when
        max_length >= the count, and cuts otherwise."""
        captions = _check_captions(captions, "CaptionTokenizer.count_tokens")
        return [len(pieces) + 1 for pieces in self._sp.encode(captions)]

    def decode(self, ids) -> list[str]:
        """int [batch, length] -> captions; stops at EOS, skips PAD."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"CaptionTokenizer.decode: expected int [batch, length], got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"CaptionTokenizer.decode: ids range [{ids.min()}, {ids.max()}] outside "
                             f"[0, {self.vocab_size})")
        captions = []
        for row in ids.tolist():
            row = row[: row.index(EOS_ID)] if EOS_ID in row else row
            captions.append(self._sp.decode([i for i in row if i != PAD_ID]))
        return captions
