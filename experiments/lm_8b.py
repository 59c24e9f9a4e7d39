"""XLA_FLAGS=--xla_force_host_platform_device_count=256 python -m vp_jax.main --config=experiments/lm_8b.py --mode=compile --workdir=/tmp/lm_8b

The paper's 8B LM (videopoet.md section 5: 8B ~ 32 layers x 4096) on the paper's token
shapes (see experiments/lm_1b.py), FSDP over 'fsdp' and 8-way tensor parallelism, with
gradient accumulation over 4 microbatches; e.g. a v5p-256 slice.

--mode=compile checks the train step compiles for this mesh and prints per-device memory and
FLOPs; with fake CPU devices the figures are the CPU compiler's (vp_jax/aot_compile.py says
what a real TPU topology needs). Variants: (none) tensor=8; 'fsdp' pure FSDP.
"""
import os

from vp_jax.config import load_config_file


def get_config(arg=None):
    config = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lm_1b.py'))
    config.model.update(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8, head_dim=128,
                        mlp_dim=11008, remat_policy='full')
    config.mesh.update(data=1, fsdp=-1, tensor=8)
    config.train.update(batch_size=512, microbatches=4)
    config.eval.batch_size = 512
    config.optimizer.update(lr=1.5e-4)
    if arg == 'fsdp':
        config.mesh.tensor = 1
    elif arg:
        raise ValueError(f"experiments/lm_8b.py: unknown variant {arg!r}; expected none or 'fsdp'.")
    return config
