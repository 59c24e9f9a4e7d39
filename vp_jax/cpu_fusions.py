"""XLA:CPU's YNNPACK fusions for the LM's train and eval steps, per compiled program.

    jax.jit(step, ..., compiler_options=lm_compiler_options(partitioner.mesh))

On CPU, XLA can fuse dots together with the elementwise ops and reductions around them into
YNNPACK kernels (DebugOptions.xla_cpu_experimental_ynn_fusion_type, experimental in XLA 0.10).
By default it forms 54 such fusions in the demo LM's train step; with dots, elementwise ops
and reductions all enabled, 137, and the step trains 15-25% more tokens/s on a 2-core Xeon
(bench/train_step.py at the video-to-audio shape: 5,050-5,510 tokens/s against 4,230-4,540;
the main job's LM stage 1178 s against 1355 s); on an AMD EPYC with AVX2 only, runs with and
without it spread over the same range (docs/demo_results.md). The same setting made the video
tokenizer's convolutional train step about twice as slow, which is why it is a compile option of the
LM's programs and not an XLA_FLAGS setting for the whole process. The sampler's programs go
without: KV-cached decoding ran no faster with it (docs/demo_results.md).

Only XLA:CPU reads the option, so programs for other devices (a GPU, or a TPU topology
compiled ahead of time from a CPU host) get none. A user's own
--xla_cpu_experimental_ynn_fusion_type in XLA_FLAGS wins (empty: no fusions).
tests/vp_jax/test_cpu_fusions.py checks that training with and without it agrees.
"""
from __future__ import annotations

import os

import jax

YNN_FUSION_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
LM_YNN_FUSIONS = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE'
# The same setting as an XLA_FLAGS entry, for a whole process (bench/maxtext_side_by_side.py).
YNN_FUSIONS_FLAG = f'--{YNN_FUSION_OPTION}=dot,eltwise,reduce'


def lm_compiler_options(mesh: jax.sharding.Mesh) -> dict[str, str]:
    """Compile options for the LM's train and eval steps on `mesh`'s devices."""
    if mesh.devices.flat[0].platform != 'cpu' or f'--{YNN_FUSION_OPTION}' in os.environ.get('XLA_FLAGS', ''):
        return {}
    return {YNN_FUSION_OPTION: LM_YNN_FUSIONS}
