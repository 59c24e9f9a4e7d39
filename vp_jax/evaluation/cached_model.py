"""Load a small model trained here from its cache file, or train and cache it.

The digit classifier and the demo feature network (scorers), and the video tokenizer's demo
perceptual network (tokenizers/magvit2/demo_perceptual.py), are small models trained once from
real demo material; each is cached to a file and reused while its training settings match.
Flax networks are fitted with `fit` (Adam, progress lines) and (`CachedFlaxModel`) stored as msgpack with their info (settings, format
version, figures) beside the parameters.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from vp_jax.files import atomic_open


def load_or_train(cls, path: str, settings, name: str, describe):
    """`cls.load(path)` if it was trained with `settings`, else `cls.train(settings).save(path)`.

    describe(model) -> str is printed after training (e.g. its validation accuracy).
    """
    try:
        model = cls.load(path)
        if model.info.get("settings") == dataclasses.asdict(settings):
            return model
        print(f"[{name}] {path} was trained with other settings; retraining")
    except FileNotFoundError:
        pass
    except ValueError as e:
        print(f"[{name}] {e}; retraining")
    print(f"[{name}] training on {settings.num_clips} real train-split demo clips")
    model = cls.train(settings)
    model.save(path)
    print(f"[{name}] {describe(model)}; saved {path}")
    return model


def save_params(path: str, params, info: dict) -> None:
    """Writes flax `params` and the json-able `info` to `path` as one msgpack file (atomically)."""
    payload = serialization.msgpack_serialize({"params": jax.device_get(params), "info_json": json.dumps(info)})
    with atomic_open(path, "wb") as f:
        f.write(payload)


def load_params(path: str, what: str, format_version: int):
    """(params, info) from a `save_params` file; FileNotFoundError / ValueError name `what` and the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, "rb") as f:
            payload = serialization.msgpack_restore(f.read())
        info = json.loads(payload["info_json"])
        params = payload["params"]
    except Exception as e:  # msgpack raises several unrelated types on a corrupt file
        raise ValueError(f"{what} file {path} is corrupt: {e}") from e
    if info.get("format_version") != format_version:
        raise ValueError(f"{what} file {path} has format_version {info.get('format_version')}; "
                         f"expected {format_version}")
    return jax.tree.map(jnp.asarray, params), info


class CachedFlaxModel:
    """save / load / load_or_train of a flax network trained here, as one msgpack file.

    Subclasses set `log_name` (the progress prefix), `what` (named in errors),
    `format_version` and `default_settings`, and define `__init__(params, info)`,
    `train(settings)` (a classmethod) and `describe()` (printed after training).
    """
    log_name: str
    what: str
    format_version: int
    default_settings = None

    def save(self, path: str) -> None:
        save_params(path, self.params, self.info)

    @classmethod
    def load(cls, path: str):
        return cls(*load_params(path, cls.what, cls.format_version))

    @classmethod
    def load_or_train(cls, path: str, settings=None):
        """Loads `path` if it holds a network trained with `settings`; else trains and saves."""
        return load_or_train(cls, path, settings or cls.default_settings, cls.log_name, lambda m: m.describe())


def fit(params, loss_fn: Callable, sample_batch: Callable[[np.random.Generator], object], steps: int,
        learning_rate: float, seed: int, log_name: str, log_every: int):
    """Adam on loss_fn(params, batch) for `steps` batches from sample_batch(rng); prints progress."""
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    start = time.time()
    for i in range(1, steps + 1):
        params, opt_state, loss = step(params, opt_state, sample_batch(rng))
        if i % log_every == 0 or i == steps:
            rate = i / (time.time() - start)
            print(f"[{log_name}] step {i}/{steps} loss={float(loss):.3f} {rate:.2f} step/s "
                  f"ETA {(steps - i) / rate:.0f}s", flush=True)
    return params
