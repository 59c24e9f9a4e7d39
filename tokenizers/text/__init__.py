"""Text encoders: a Flax T5 v1.1 encoder for real checkpoints and a caption sentencepiece tokenizer."""
from .api import TEXT_ENCODER_KINDS, make_text_encoder
from .caption_tokenizer import CaptionTokenizer
from .t5 import T5Encoder, T5EncoderConfig

__all__ = ["CaptionTokenizer", "T5Encoder", "T5EncoderConfig", "TEXT_ENCODER_KINDS", "make_text_encoder"]
