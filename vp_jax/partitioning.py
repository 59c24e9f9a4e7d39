"""One object owns the device mesh and the logical-axis rules (t5x's Partitioner, slimmed).

Model code names array dimensions only logically (`('embed', 'mlp')` for an MLP kernel,
`('batch', 'length', 'embed')` for activations). One rules table maps those names onto the
three mesh axes ('data', 'fsdp', 'tensor'), so the same model runs data-parallel,
FSDP-sharded or tensor-parallel by changing config only:

    partitioner = Partitioner({'data': -1, 'fsdp': 2, 'tensor': 1})
    state, shardings = partitioner.init_sharded(init_fn, rng)   # never materialised unsharded
    batch = partitioner.shard_host_batch(host_batch)            # this host's rows -> global arrays
    with partitioner.activate():                                # trace-time rules for the model's
        step = jax.jit(...)                                     # with_logical_constraint calls

Rules are pairs `(logical_name, mesh_axes)` in priority order; a mesh axis is used at most
once per array (flax resolves conflicts), so activations `('batch', 'length', 'embed')`
shard the batch over ('data', 'fsdp') and leave 'embed' whole, while an `('embed', 'mlp')`
kernel shards 'embed' over 'fsdp' and 'mlp' over 'tensor'.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')
# Mesh axes that shard the batch; 'tensor' replicates the batch.
BATCH_MESH_AXES = ('data', 'fsdp')

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ('batch', ('data', 'fsdp')),
    ('vocab', 'tensor'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('mlp', 'tensor'),
    ('embed', 'fsdp'),
    ('kv', None),
    ('length', None),
    ('cache_length', None),
    ('layers', None),
    ('norm', None),
    ('text_embed', None),
)


def resolve_mesh_shape(mesh_shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills at most one -1 entry so the axis sizes multiply to `num_devices`.

    >>> resolve_mesh_shape({'data': -1, 'fsdp': 2, 'tensor': 1}, 8)
    {'data': 4, 'fsdp': 2, 'tensor': 1}
    """
    unknown = set(mesh_shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f'mesh_shape has unknown axes {sorted(unknown)}; expected a subset of {MESH_AXES}.')
    shape = {axis: int(mesh_shape.get(axis, 1)) for axis in MESH_AXES}
    auto = [axis for axis, size in shape.items() if size == -1]
    bad = {axis: size for axis, size in shape.items() if size == 0 or size < -1}
    if bad or len(auto) > 1:
        raise ValueError(
            f'mesh_shape={dict(mesh_shape)}: sizes must be positive, with at most one -1 (auto-fill); '
            f'got bad sizes {bad} and {len(auto)} auto axes.')
    known = math.prod(size for size in shape.values() if size != -1)
    if auto:
        if num_devices % known:
            raise ValueError(
                f'mesh_shape={dict(mesh_shape)}: the fixed axes multiply to {known}, which does not divide '
                f'the {num_devices} available devices, so {auto[0]!r}=-1 cannot be filled.')
        shape[auto[0]] = num_devices // known
    elif known != num_devices:
        raise ValueError(
            f'mesh_shape={dict(mesh_shape)}: the axis sizes multiply to {known}, expected the device count '
            f'{num_devices}.')
    return shape


def normalize_rules(rules: LogicalRules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """Validates config-given rules (lists from ConfigDict/JSON are fine) into hashable tuples."""
    normalized = []
    for i, rule in enumerate(rules):
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f'logical_axis_rules[{i}]={rule!r}: expected (logical_name, mesh_axes).')
        logical, mesh_axes = rule
        if isinstance(mesh_axes, (list, tuple)):
            mesh_axes = tuple(mesh_axes)
            names = mesh_axes
        else:
            names = () if mesh_axes is None else (mesh_axes,)
        for name in names:
            if name not in MESH_AXES:
                raise ValueError(
                    f'logical_axis_rules[{i}]={rule!r}: mesh axis {name!r} is not one of {MESH_AXES}.')
        normalized.append((logical, mesh_axes))
    return tuple(normalized)


def _path_str(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator='/')


class Partitioner:
    """Owns the mesh ('data', 'fsdp', 'tensor') and the logical-to-mesh rules."""

    def __init__(self,
                 mesh_shape: Mapping[str, int] | None = None,
                 logical_axis_rules: LogicalRules = DEFAULT_RULES,
                 devices: Sequence[jax.Device] | None = None,
                 allow_unnamed_params: bool = False,
                 max_replicated_fraction: float = 0.1):
        """Builds the mesh.

        Args:
          mesh_shape: axis sizes; -1 fills the rest (default: all devices on 'data').
          logical_axis_rules: `(logical_name, mesh_axes)` pairs in priority order.
          devices: devices of the mesh (default: `jax.devices()`).
          allow_unnamed_params: replicate state leaves without logical names instead of
            failing (tokenizers trained with pure data parallelism use this).
          max_replicated_fraction: when the mesh shards parameters (fsdp * tensor > 1), the
            largest fraction of state bytes that may end up fully replicated.
        """
        devices = list(jax.devices() if devices is None else devices)
        shape = resolve_mesh_shape(mesh_shape or {'data': -1, 'fsdp': 1, 'tensor': 1}, len(devices))
        if not 0.0 <= max_replicated_fraction <= 1.0:
            raise ValueError(f'max_replicated_fraction={max_replicated_fraction}: expected a value in [0, 1].')
        self.rules = normalize_rules(logical_axis_rules)
        self.allow_unnamed_params = allow_unnamed_params
        self.max_replicated_fraction = max_replicated_fraction
        dims = [shape[axis] for axis in MESH_AXES]
        try:
            device_grid = mesh_utils.create_device_mesh(dims, devices=devices, allow_split_physical_axes=True)
        except (ValueError, NotImplementedError, AssertionError):
            device_grid = np.asarray(devices, dtype=object).reshape(dims)
        self.mesh = jax.sharding.Mesh(device_grid, MESH_AXES,
                                      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))
        self.data_sharding = NamedSharding(self.mesh, PartitionSpec(BATCH_MESH_AXES))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_batch_shards(self) -> int:
        """How many ways the global batch is split (data * fsdp)."""
        return math.prod(self.mesh.shape[axis] for axis in BATCH_MESH_AXES)

    @contextlib.contextmanager
    def activate(self):
        """Makes the mesh and rules visible to `nn.with_logical_constraint` while tracing.

        Works outside jit (eager code, `.lower`) and inside a traced function.
        """
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh), nn.logical_axis_rules(self.rules):
            yield

    def logical_to_mesh_spec(self, logical_spec: PartitionSpec | Sequence[str | None]) -> PartitionSpec:
        return nn.logical_to_mesh_axes(tuple(logical_spec), self.rules)

    def logical_shardings(self, logical_spec_tree: Any) -> Any:
        """Maps a tree of logical PartitionSpecs to NamedShardings on this mesh."""
        return nn.logical_to_mesh_sharding(logical_spec_tree, self.mesh, self.rules)

    def shard_host_batch(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Turns this process's rows [local_batch, ...] into global arrays sharded on the batch.

        Each process passes only its own rows; the global batch is local_batch * process_count.
        """
        local_rows = {key: np.shape(value)[0] if np.ndim(value) else None for key, value in host_batch.items()}
        if any(rows is None for rows in local_rows.values()) or len(set(local_rows.values())) > 1:
            raise ValueError(f'host batch: every feature needs the same leading batch size; got {local_rows}.')
        local_shards = self.num_batch_shards // max(1, jax.process_count())
        rows = next(iter(local_rows.values()), 0)
        if local_shards and rows % local_shards:
            raise ValueError(
                f'host batch: {rows} rows per process is not divisible by the {local_shards} batch shards '
                f'(data*fsdp={self.num_batch_shards}) this process feeds.')
        return {key: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(value))
                for key, value in host_batch.items()}

    def abstract_sharded(self, init_fn: Callable[..., Any], *args) -> tuple[Any, Any]:
        """Shapes and shardings of `init_fn(*args)` without running it.

        Returns (abstract_state, shardings): `abstract_state` holds jax.ShapeDtypeStruct with
        `.sharding` set (what Orbax restore wants); logical boxes are removed.
        """
        boxed = jax.eval_shape(init_fn, *args)
        self._check_named(boxed)
        shardings = self.logical_shardings(nn.get_partition_spec(boxed))
        abstract = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                                nn.unbox(boxed), shardings)
        self._check_divisible(abstract)
        self._check_replicated_fraction(abstract)
        return abstract, shardings

    def init_sharded(self, init_fn: Callable[..., Any], *args) -> tuple[Any, Any]:
        """Runs `init_fn(*args)` under jit so every leaf is created directly in its shards.

        `init_fn` may return flax `LogicallyPartitioned` boxes (from nn.with_logical_partitioning);
        the returned state is unboxed. Returns (state, state_shardings).
        """
        _, shardings = self.abstract_sharded(init_fn, *args)
        with self.activate():
            state = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
        return state, shardings

    def _check_named(self, boxed_state: Any) -> None:
        """Fails when a non-scalar leaf has no logical axis names (unless allowed)."""
        unnamed = []

        def visit(path, leaf):
            if not isinstance(leaf, nn.spmd.LogicallyPartitioned) and getattr(leaf, 'ndim', 0) > 0:
                unnamed.append(f'{_path_str(path)} {tuple(leaf.shape)}')

        is_boxed = lambda x: isinstance(x, nn.spmd.LogicallyPartitioned)
        jax.tree_util.tree_map_with_path(visit, boxed_state, is_leaf=is_boxed)
        if unnamed and not self.allow_unnamed_params:
            listed = ', '.join(unnamed[:10]) + (' ...' if len(unnamed) > 10 else '')
            raise ValueError(
                f'{len(unnamed)} state leaves have no logical axis names (wrap their initializers with '
                f'nn.with_logical_partitioning, or pass allow_unnamed_params=True to replicate them): {listed}')

    def _check_divisible(self, abstract_state: Any) -> None:
        def visit(path, leaf):
            for dim, axes in zip(leaf.shape, leaf.sharding.spec):
                axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
                ways = math.prod(self.mesh.shape[a] for a in axes)
                if dim % ways:
                    raise ValueError(
                        f'state leaf {_path_str(path)} of shape {tuple(leaf.shape)} cannot be sharded as '
                        f'{leaf.sharding.spec} on mesh {dict(self.mesh.shape)}: dimension {dim} is not divisible '
                        f'by {ways}. Change the model size or the mesh/rules.')

        jax.tree_util.tree_map_with_path(visit, abstract_state)

    def _check_replicated_fraction(self, abstract_state: Any) -> None:
        """On a mesh that shards parameters, too many replicated bytes means missing rules."""
        if self.mesh.shape['fsdp'] * self.mesh.shape['tensor'] == 1:
            return
        total = replicated = 0
        for leaf in jax.tree.leaves(abstract_state):
            size = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
            total += size
            if leaf.sharding.is_fully_replicated:
                replicated += size
        if total and replicated / total > self.max_replicated_fraction:
            raise ValueError(
                f'{replicated / total:.1%} of the state bytes ({replicated} of {total}) are fully replicated on '
                f'mesh {dict(self.mesh.shape)}, above max_replicated_fraction={self.max_replicated_fraction}; '
                'check the logical_axis_rules.')
