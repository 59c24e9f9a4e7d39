"""MAGVIT-v2 video/image tokenizer: causal 3D CNN + lookup-free quantization (LFQ).

Inference: `VideoTokenizer` (api.py). Training: `python -m vp_tokenizers.magvit2.train`.
Evaluation: `python -m vp_tokenizers.magvit2.evaluate`.
"""
from vp_tokenizers.magvit2.api import VideoTokenizer
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config

__all__ = ["Magvit2", "Magvit2Config", "VideoTokenizer"]
