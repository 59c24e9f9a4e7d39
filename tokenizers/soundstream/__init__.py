"""SoundStream audio tokenizer: SEANet encoder/decoder, residual VQ, trainer, API, evaluation."""
from .api import AudioTokenizer
from .audio_io import AudioReadError, read_audio, write_wav

__all__ = ["AudioReadError", "AudioTokenizer", "read_audio", "write_wav"]
