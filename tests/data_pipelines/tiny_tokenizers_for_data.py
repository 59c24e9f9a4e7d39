"""Tiny randomly initialised REAL tokenizers for the data-pipeline tests (not a test module).

`make_tiny_tokenizers()` is a zero-argument factory, importable by name, so Beam can pickle
it and every worker rebuilds the same weights (fixed seeds). A word-level caption tokenizer
stands in for the sentencepiece one only where that helper's module has not landed.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.pretokenize import Tokenizers
from vp_tokenizers.magvit2.api import VideoTokenizer
from vp_tokenizers.magvit2.model import Magvit2, Magvit2Config
from vp_tokenizers.soundstream.api import AudioTokenizer
from vp_tokenizers.soundstream.model import init_soundstream, soundstream_from_config

def random_variables(abstract, seed: int):
    """Real random weights for a tree of ShapeDtypeStructs, made in numpy.

    Avoids compiling the models' init (minutes on a busy 2-core machine): kernels and
    codebooks ~ N(0, 1/fan_in), norm scales and usage counts 1, biases 0.
    """
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:]).strip("[]'")
        if name in ("scale", "usage"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


VIDEO_CONFIG = Magvit2Config(num_bits=6, base_channels=8, channel_multipliers=(1, 1, 1, 1),
                             num_res_blocks=1, num_groups=4)


def tiny_video_tokenizer() -> VideoTokenizer:
    abstract = jax.eval_shape(Magvit2(VIDEO_CONFIG).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 1, 8, 8, 3)))
    params = random_variables(abstract, seed=0)
    return VideoTokenizer(VIDEO_CONFIG, params, batch_size=8)


def tiny_audio_tokenizer() -> AudioTokenizer:
    config = ml_collections.ConfigDict({"sample_rate": 16000, "model": {
        "channels": 4, "max_channels": 16, "strides": (4, 5, 16), "dilations": (1, 3, 9), "latent_dim": 8, "levels": 2,
        "codebook_size": 16, "codebook_kind": "ema", "ema_decay": 0.95, "dead_code_threshold": 0.0,
        "quantizer_dropout_rate": 0.0, "kmeans_init": False, "kmeans_iterations": 0}})
    model = soundstream_from_config(config.model)
    abstract = jax.eval_shape(lambda rng: init_soundstream(model, rng, 320), jax.random.PRNGKey(1))
    variables = random_variables(abstract, seed=1)
    return AudioTokenizer(config, variables, "soundstream:tiny-random")


class WordCaptionTokenizer:
    """Word ids from a fixed list (0 = unknown); same encode contract as CaptionTokenizer."""

    WORDS = ("<unk>", "the", "digit", "zero", "one", "two", "three", "four", "five", "six",
             "seven", "eight", "nine", "moves", "left", "right", "up", "down", "slowly",
             "quickly", "over", "photo")
    vocab_size = len(WORDS)
    checkpoint_id = "words-v1"

    def encode(self, captions, max_length):
        ids = np.zeros((len(captions), max_length), np.int32)
        mask = np.zeros((len(captions), max_length), bool)
        for row, caption in enumerate(captions):
            words = [self.WORDS.index(w) if w in self.WORDS else 0 for w in caption.split()]
            words = words[:max_length]
            ids[row, :len(words)], mask[row, :len(words)] = words, True
        return ids, mask

    def count_tokens(self, captions):
        return [len(caption.split()) for caption in captions]


def make_tiny_tokenizers() -> Tokenizers:
    return Tokenizers(video=tiny_video_tokenizer(), audio=tiny_audio_tokenizer(),
                      text=WordCaptionTokenizer())
