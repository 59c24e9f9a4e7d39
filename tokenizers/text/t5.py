"""Frozen T5 v1.1 encoder in Flax, loading real checkpoints a user has on disk.

VideoPoet reads captions through T5-XL encoder embeddings (at most 64 per caption) that the
data pipeline precomputes into shards. Nothing is downloaded: point `T5Encoder.load` at

  * a Hugging Face directory: config.json, model.safetensors (or model.safetensors.index.json
    with its shards; a full T5ForConditionalGeneration file works, only encoder weights are
    read) and spiece.model; or
  * a t5x checkpoint saved with Orbax (the directory of one step, holding the t5x tree under
    'target' or 'params'), with spiece.model beside it (in it or its parent) and optionally
    a Hugging Face style config.json; without one, the shapes give the sizes and the
    T5 v1.1 defaults (32 buckets, max distance 128, eps 1e-6, gated-gelu) fill the rest.

    encoder = T5Encoder.load("/models/t5-v1_1-xl")
    embeddings, mask = encoder.encode(["a red digit 3 bouncing"], max_length=64)
    # float32 [1, 64, 2048], bool [1, 64]

Parameter names follow t5x (token_embedder, relpos_bias, layers_i/attention/query, ...),
so the t5x tree loads as is and the Hugging Face names are mapped once in
`params_from_hf_state`. The math matches transformers' T5EncoderModel: RMS layer norms
without bias, unscaled dot-product attention, one relative position bias shared by all
layers, (gated-)GELU feed-forward, final RMS norm.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """transformers' naming: 'gated-gelu' means the tanh-approximate GELU."""
        name = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else name

    def validate(self, source: str) -> None:
        for field in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{source}: {field}={getattr(self, field)!r}, expected a positive int")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{source}: feed_forward_proj={self.feed_forward_proj!r}, expected "
                             f"'gated-gelu', 'relu' or '[gated-]' + one of {sorted(ACTIVATIONS)}")

    @classmethod
    def from_hf_json(cls, path: str) -> "T5EncoderConfig":
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"T5 config {path!r} is unreadable ({e})") from e
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names[:6] if n not in raw]
        if missing:
            raise ValueError(f"T5 config {path!r} lacks fields {missing}")
        config = cls(**{n: raw[n] for n in names if n in raw})
        config.validate(path)
        return config


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bidirectional bucketing of key_pos - query_pos (exact near 0, log-spaced far)."""
    num_buckets //= 2
    buckets = (relative_position > 0).astype(np.int32) * num_buckets
    distance = np.abs(relative_position)
    max_exact = num_buckets // 2
    far = max_exact + (np.log(np.maximum(distance, 1) / max_exact) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int32)
    far = np.minimum(far, num_buckets - 1)
    return buckets + np.where(distance < max_exact, distance, far)


class T5RMSNorm(nn.Module):
    epsilon: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        return (x32 * jax.lax.rsqrt(jnp.mean(x32**2, axis=-1, keepdims=True) + self.epsilon)) * scale


class T5SelfAttention(nn.Module):
    """Unscaled multi-head self-attention (T5 folds 1/sqrt(d_kv) into the query weights)."""
    config: T5EncoderConfig

    @nn.compact
    def __call__(self, h, bias):
        """h [batch, length, d_model], bias [batch, heads, length, length] -> [batch, length, d_model]."""
        c = self.config
        inner = c.num_heads * c.d_kv
        split = lambda t: t.reshape(*t.shape[:2], c.num_heads, c.d_kv)
        q, k, v = (split(nn.Dense(inner, use_bias=False, name=n)(h)) for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*h.shape[:2], inner)
        return nn.Dense(c.d_model, use_bias=False, name="out")(out)


class T5FeedForward(nn.Module):
    config: T5EncoderConfig

    @nn.compact
    def __call__(self, h):
        c = self.config
        act = ACTIVATIONS[c.activation]
        if c.is_gated:
            hidden = (act(nn.Dense(c.d_ff, use_bias=False, name="wi_0")(h))
                      * nn.Dense(c.d_ff, use_bias=False, name="wi_1")(h))
        else:
            hidden = act(nn.Dense(c.d_ff, use_bias=False, name="wi")(h))
        return nn.Dense(c.d_model, use_bias=False, name="wo")(hidden)


class T5EncoderLayer(nn.Module):
    config: T5EncoderConfig

    @nn.compact
    def __call__(self, x, bias):
        c = self.config
        h = T5RMSNorm(c.layer_norm_epsilon, name="pre_attention_layer_norm")(x)
        x = x + T5SelfAttention(c, name="attention")(h, bias)
        h = T5RMSNorm(c.layer_norm_epsilon, name="pre_mlp_layer_norm")(x)
        return x + T5FeedForward(c, name="mlp")(h)


class T5EncoderModule(nn.Module):
    """ids int32 [batch, length], mask bool [batch, length] -> float32 [batch, length, d_model]."""
    config: T5EncoderConfig

    @nn.compact
    def __call__(self, ids, mask):
        c = self.config
        embedding = self.param("token_embedder", nn.initializers.normal(1.0), (c.vocab_size, c.d_model))
        rel_embedding = self.param("relpos_bias", nn.initializers.normal(1.0),
                                   (c.num_heads, c.relative_attention_num_buckets))
        length = ids.shape[1]
        positions = np.arange(length)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None],
                                           c.relative_attention_num_buckets,
                                           c.relative_attention_max_distance)
        position_bias = rel_embedding[:, buckets]                         # [heads, q, k]
        mask_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
        bias = position_bias[None].astype(jnp.float32) + mask_bias
        x = embedding[ids]
        for i in range(c.num_layers):
            x = T5EncoderLayer(c, name=f"layers_{i}")(x, bias)
        return T5RMSNorm(c.layer_norm_epsilon, name="encoder_norm")(x)


def _hf_encoder_tensors(directory: str) -> dict[str, np.ndarray]:
    """Reads model.safetensors (or its index's shards) -> {name: float32 array}, encoder only."""
    from safetensors.flax import load_file  # handles bfloat16 checkpoints (numpy cannot)
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(single):
        files = [single]
    elif os.path.exists(index):
        with open(index) as f:
            files = sorted({os.path.join(directory, v) for v in json.load(f)["weight_map"].values()})
    else:
        raise FileNotFoundError(f"T5Encoder.load: {directory!r} has neither model.safetensors nor "
                                "model.safetensors.index.json (PyTorch .bin files are not read: "
                                "convert them to safetensors)")
    tensors = {}
    for path in files:
        try:
            loaded = load_file(path)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"T5Encoder.load: {path!r} is not a readable safetensors file ({e})") from e
        tensors.update({k: np.asarray(v, np.float32) for k, v in loaded.items()
                        if k.startswith(("encoder.", "shared."))})
    return tensors


def params_from_hf_state(tensors: Mapping[str, np.ndarray], config: T5EncoderConfig,
                         source: str) -> dict:
    """Maps transformers' T5 encoder names to this module's params (Linear weights transposed)."""
    def take(name):
        if name not in tensors:
            raise ValueError(f"T5Encoder.load: {source} lacks tensor {name!r}")
        return tensors[name]

    embedding = tensors.get("shared.weight", tensors.get("encoder.embed_tokens.weight"))
    if embedding is None:
        raise ValueError(f"T5Encoder.load: {source} has neither 'shared.weight' nor "
                         "'encoder.embed_tokens.weight'")
    params = {
        "token_embedder": embedding,
        "relpos_bias": take("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").T,
        "encoder_norm": {"scale": take("encoder.final_layer_norm.weight")},
    }
    ff_names = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
    for i in range(config.num_layers):
        prefix = f"encoder.block.{i}.layer"
        params[f"layers_{i}"] = {
            "pre_attention_layer_norm": {"scale": take(f"{prefix}.0.layer_norm.weight")},
            "attention": {ours: {"kernel": take(f"{prefix}.0.SelfAttention.{hf}.weight").T}
                          for ours, hf in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))},
            "pre_mlp_layer_norm": {"scale": take(f"{prefix}.1.layer_norm.weight")},
            "mlp": {n: {"kernel": take(f"{prefix}.1.DenseReluDense.{n}.weight").T} for n in ff_names},
        }
    return params


def _find_t5x_root(tree, source: str) -> Mapping:
    """The dict holding 'token_embedder' and 'encoder' (t5x: under 'target' or 'params')."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            if "token_embedder" in node and "encoder" in node:
                return node
            stack.extend(node.values())
    raise ValueError(f"T5Encoder.load: {source} is an Orbax checkpoint but holds no t5x tree "
                     "(a dict with 'token_embedder' and 'encoder')")


def params_from_t5x_tree(tree, config: T5EncoderConfig | None, source: str) -> tuple[dict, T5EncoderConfig]:
    """t5x names -> this module's params; infers the config from shapes when none is given."""
    root = _find_t5x_root(tree, source)
    encoder = root["encoder"]
    array = lambda x: np.asarray(x, np.float32)
    try:
        embedding = array(root["token_embedder"]["embedding"])
        rel = array(encoder["relpos_bias"]["rel_embedding"])
        num_layers = sum(1 for k in encoder if k.startswith("layers_"))
        first = encoder["layers_0"]
        gated = "wi_0" in first["mlp"]
        if config is None:
            num_heads = rel.shape[0]
            config = T5EncoderConfig(
                vocab_size=embedding.shape[0], d_model=embedding.shape[1],
                d_kv=np.shape(first["attention"]["query"]["kernel"])[1] // num_heads,
                d_ff=np.shape(first["mlp"]["wi_0" if gated else "wi"]["kernel"])[1],
                num_layers=num_layers, num_heads=num_heads,
                relative_attention_num_buckets=rel.shape[1],
                feed_forward_proj="gated-gelu" if gated else "relu")
            config.validate(source)
        params = {"token_embedder": embedding, "relpos_bias": rel,
                  "encoder_norm": {"scale": array(encoder["encoder_norm"]["scale"])}}
        for i in range(config.num_layers):
            params[f"layers_{i}"] = jax.tree.map(array, dict(encoder[f"layers_{i}"]))
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"T5Encoder.load: {source}: t5x tree is missing or misshapes {e}") from e
    return params, config


def check_params(params, config: T5EncoderConfig, source: str) -> None:
    """Every expected tensor is present with the expected shape."""
    expected = jax.eval_shape(
        lambda: T5EncoderModule(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                                             jnp.ones((1, 1), bool)))["params"]
    flat_expected = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    flat_given = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for name, shape in flat_expected.items():
        if name not in flat_given:
            raise ValueError(f"T5Encoder.load: {source} lacks parameter {name} of shape {shape}")
        if tuple(flat_given[name]) != tuple(shape):
            raise ValueError(f"T5Encoder.load: {source}: parameter {name} has shape "
                             f"{tuple(flat_given[name])}, expected {tuple(shape)} from the config")


def find_sentencepiece_model(directory: str) -> str:
    for candidate in (os.path.join(directory, "spiece.model"),
                      os.path.join(os.path.dirname(os.path.abspath(directory)), "spiece.model")):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"T5Encoder.load: no spiece.model in {directory!r} or its parent "
                            "(the sentencepiece model that goes with the checkpoint)")


class T5Encoder:
    """Captions -> T5 encoder embeddings, with the checkpoint's sentencepiece vocabulary.

    Tokenization follows transformers' T5Tokenizer: sentencepiece ids, truncated to
    max_length - 1, then the EOS id; padded with the pad id (0) to exactly max_length so one
    compiled program serves every batch. Outputs at padded positions are computed but
    masked out (mask False); consumers must ignore them.
    """

    def __init__(self, config: T5EncoderConfig, params: dict, spiece_path: str, source: str,
                 param_dtype: str = "float32"):
        import sentencepiece as spm
        check_params(params, config, source)
        if param_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"T5Encoder: param_dtype={param_dtype!r}, expected 'float32' or 'bfloat16'")
        self.config = config
        self.dim = config.d_model
        self.source = source
        # bfloat16 halves the weights' memory (T5-XL's encoder: ~5.5 GB -> ~2.7 GB); the
        # activations after the first norm are float32 either way.
        self.params = jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params)
        self._sp = spm.SentencePieceProcessor(model_file=spiece_path)
        if self._sp.get_piece_size() > config.vocab_size:
            raise ValueError(f"T5Encoder: {spiece_path!r} has {self._sp.get_piece_size()} pieces, more "
                             f"than the checkpoint's vocab_size {config.vocab_size}")
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise ValueError(f"T5Encoder: {spiece_path!r} defines no EOS piece; T5 appends one")
        self.pad_id = max(self._sp.pad_id(), 0)
        module = T5EncoderModule(config)
        self._apply = jax.jit(lambda p, ids, mask: module.apply({"params": p}, ids, mask))

    @classmethod
    def load(cls, path: str, param_dtype: str = "float32") -> "T5Encoder":
        """A Hugging Face T5 directory or a t5x/Orbax checkpoint directory (see module doc)."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"T5Encoder.load: {path!r} is not a directory")
        spiece = find_sentencepiece_model(path)
        config_path = os.path.join(path, "config.json")
        config = T5EncoderConfig.from_hf_json(config_path) if os.path.exists(config_path) else None
        has_safetensors = any(os.path.exists(os.path.join(path, n))
                              for n in ("model.safetensors", "model.safetensors.index.json"))
        if has_safetensors:
            if config is None:
                raise FileNotFoundError(f"T5Encoder.load: {config_path!r} is missing (Hugging Face layout)")
            params = params_from_hf_state(_hf_encoder_tensors(path), config, path)
        else:
            import orbax.checkpoint as ocp
            try:
                tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
            except Exception as e:  # Orbax raises many types for a non-checkpoint directory
                raise ValueError(f"T5Encoder.load: {path!r} is neither a Hugging Face T5 directory "
                                 f"(model.safetensors) nor a readable Orbax checkpoint ({e})") from e
            params, config = params_from_t5x_tree(tree, config, path)
        return cls(config, params, spiece, path, param_dtype)

    def tokenize(self, captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """-> int32 ids [batch, max_length], bool mask [batch, max_length]."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError("T5Encoder: captions must be a sequence of str")
        if max_length < 1:
            raise ValueError(f"T5Encoder: max_length={max_length}, expected >= 1")
        ids = np.full((len(captions), max_length), self.pad_id, np.int32)
        mask = np.zeros_like(ids, bool)
        for row, pieces in enumerate(self._sp.encode(list(captions))):
            pieces = pieces[: max_length - 1] + [self.eos_id]
            ids[row, : len(pieces)] = pieces
            mask[row, : len(pieces)] = True
        return ids, mask

    def count_tokens(self, captions: Sequence[str]) -> list[int]:
        """Tokens each caption needs uncut (pieces + EOS); `tokenize` cuts longer ones."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError("T5Encoder: captions must be a sequence of str")
        return [len(pieces) + 1 for pieces in self._sp.encode(list(captions))]

    def encode(self, captions: Sequence[str], max_length: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """captions -> float32 embeddings [batch, max_length, dim], bool mask [batch, max_length]."""
        ids, mask = self.tokenize(captions, max_length)
        if not len(captions):
            return np.zeros((0, max_length, self.dim), np.float32), mask
        embeddings = self._apply(self.params, jnp.asarray(ids), jnp.asarray(mask))
        return np.asarray(embeddings, np.float32), mask
