"""The tokenizer train step runs data parallel on an 8-device mesh and matches one device."""
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import importlib.util, sys
    import jax, numpy as np
    from vp_jax.partitioning import Partitioner
    from vp_tokenizers.magvit2 import data as data_lib, train
    from vp_tokenizers.magvit2.model import Magvit2Config
    spec = importlib.util.spec_from_file_location("cfg", sys.argv[1])
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    config = module.get_config("quick")
    config.model.update(base_channels=4, num_groups=2)
    config.data.update(num_frames=5, height=16, width=16)
    phase = train.make_phase("video", config, Magvit2Config.from_dict(config.model), None)
    batch = data_lib.batch_of_clips(data_lib.make_source(config.data, "train"), 0, 8)
    rng = jax.random.PRNGKey(0)
    single_state, single_metrics = jax.jit(phase.train_step)(jax.jit(phase.init_state)(rng), batch)
    partitioner = Partitioner({"data": -1, "fsdp": 1, "tensor": 1}, allow_unnamed_params=True)
    assert partitioner.mesh.shape["data"] == 8
    state, shardings = partitioner.init_sharded(phase.init_state, rng)
    step = jax.jit(phase.train_step, in_shardings=(shardings, partitioner.data_sharding),
                   out_shardings=(shardings, partitioner.replicated))
    sharded_batch = partitioner.shard_host_batch({"video": batch})["video"]
    assert len(sharded_batch.sharding.device_set) == 8
    state, metrics = step(state, sharded_batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(single_metrics["loss"]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(single_state["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    print("DATA_PARALLEL_OK")
""")


@pytest.mark.slow
def test_train_step_on_eight_devices_matches_one_device(tmp_path):
  config = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "magvit2_demo.py")
  script = tmp_path / "data_parallel.py"
  script.write_text(_SCRIPT)
  result = subprocess.run([sys.executable, str(script), config], capture_output=True, text=True,
                          timeout=1200)
  assert "DATA_PARALLEL_OK" in result.stdout, result.stderr[-3000:]
