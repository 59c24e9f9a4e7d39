"""Steady-state LM train-step speed: step time, tokens/s and achieved FLOP/s.

    python bench/train_step.py                       # the MaxText comparison shape (below)
    python bench/train_step.py --steps=20 --scan_layers=true --remat_policy=full
    python bench/train_step.py --dtype=bfloat16 --attention_impl=cudnn --peak_tflops=989 ...  # GPU

Default shape: 4 layers, d_model 256, 4 heads x 64, SwiGLU MLP 1024, RMSNorm, RoPE, vocab
4096, sequence 512, batch 8, float32, all causal (empty prefix); AdamW. FLOPs are the
analytic count of vp_jax/flops.py. The last line is `tokens_per_s=<v> step_s=<v>` (median
over the timed steps). On a shared machine the figures are noisy: say so when quoting them.

CPU choices, measured on the 2-core Xeon (Sapphire Rapids) dev box under heavy contention
(load 12-15), in process-CPU seconds per step: scanned layers 4.55, unrolled 3.77,
unrolled + XLA's YNN fusions of dots, elementwise ops and reductions 3.22, plus causal
key-block skipping in attention 2.97. The trainer's step compiles with those fusions on CPU
(vp_jax/cpu_fusions.py); `--cpu_xla_flags=--xla_cpu_experimental_ynn_fusion_type=` measures
the step without any.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import numpy as np

from vp_jax.vocabulary import Modality  # numpy only: jax must not start before XLA_FLAGS is set.

# jax is imported in main(), after --cpu_xla_flags is in XLA_FLAGS (read once, at backend start).


def _flag_bool(text: str) -> bool:
    if text.lower() not in ('true', 'false', '1', '0'):
        raise argparse.ArgumentTypeError(f'expected true/false, got {text!r}')
    return text.lower() in ('true', '1')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--length', type=int, default=512)
    parser.add_argument('--prefix_length', type=int, default=0)
    parser.add_argument('--num_layers', type=int, default=4)
    parser.add_argument('--d_model', type=int, default=256)
    parser.add_argument('--num_heads', type=int, default=4)
    parser.add_argument('--head_dim', type=int, default=64)
    parser.add_argument('--mlp_dim', type=int, default=1024)
    parser.add_argument('--vocab_size', type=int, default=4096)
    parser.add_argument('--dtype', default='float32')
    parser.add_argument('--scan_layers', type=_flag_bool, default=False)
    parser.add_argument('--cpu_xla_flags', default='', help='appended to XLA_FLAGS (read when JAX starts)')
    parser.add_argument('--remat_policy', default='none')
    parser.add_argument('--attention_impl', default='xla', help="'xla', 'cudnn' (GPU, bf16) or 'splash' (TPU)")
    parser.add_argument('--peak_tflops', type=float, default=0.0,
                        help="the device's peak at --dtype (e.g. 989 for an H100/H200's dense bf16): adds MFU")
    parser.add_argument('--num_microbatches', type=int, default=1)
    parser.add_argument('--warmup_steps', type=int, default=2)
    parser.add_argument('--steps', type=int, default=10)
    return parser.parse_args()


def synthetic_batch(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random visual tokens, one example per row, loss on every non-prefix position."""
    shape = (args.batch_size, args.length)
    index = np.broadcast_to(np.arange(args.length, dtype=np.int32), shape)
    return {
        'input_tokens': rng.integers(1, args.vocab_size, shape).astype(np.int32),
        'target_tokens': rng.integers(1, args.vocab_size, shape).astype(np.int32),
        'loss_weights': (index >= args.prefix_length).astype(np.float32),
        'prefix_mask': (index < args.prefix_length).astype(np.int32),
        'segment_ids': np.ones(shape, np.int32),
        'positions': index.copy(),
        'input_modality': np.full(shape, int(Modality.VISUAL), np.int32),
        'target_modality': np.full(shape, int(Modality.VISUAL), np.int32),
        'task_ids': np.zeros(shape, np.int32),
    }


def main() -> None:
    args = parse_args()
    if args.cpu_xla_flags:
        os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {args.cpu_xla_flags}".strip()
    import jax
    import optax

    from vp_jax.flops import train_step_flops
    from vp_jax.model import Transformer
    from vp_jax.model_config import TransformerConfig
    from vp_jax.partitioning import Partitioner
    from vp_jax.train_step import create_train_state, jit_train_step, make_train_step
    config = TransformerConfig(
        vocab_size=args.vocab_size, num_layers=args.num_layers, d_model=args.d_model, num_heads=args.num_heads,
        head_dim=args.head_dim, mlp_dim=args.mlp_dim, max_length=args.length, dtype=args.dtype,
        scan_layers=args.scan_layers, remat_policy=args.remat_policy, attention_impl=args.attention_impl)
    model, optimizer, partitioner = Transformer(config), optax.adamw(1e-3), Partitioner()
    state, shardings = partitioner.init_sharded(functools.partial(create_train_state, model, optimizer),
                                                jax.random.key(0))
    step = jit_train_step(partitioner, make_train_step(model, optimizer, {'num_microbatches': args.num_microbatches}),
                          shardings)
    batch = partitioner.shard_host_batch(synthetic_batch(args, np.random.default_rng(0)))
    rng = jax.random.key(1)

    start = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    print(f'compile + first step: {time.perf_counter() - start:.1f}s on {jax.device_count()} '
          f'{jax.devices()[0].platform} device(s); XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
    for _ in range(args.warmup_steps - 1):
        state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)

    flops = train_step_flops(config, args.batch_size, args.length, args.prefix_length)
    tokens = args.batch_size * args.length
    times, cpu_times = [], []
    for i in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        print(f'step {i + 1}/{args.steps}: {times[-1]:.3f}s (process CPU {cpu_times[-1]:.2f}s) '
              f'{tokens / times[-1]:.0f} tokens/s {flops / times[-1] / 1e9:.1f} GFLOP/s '
              f'loss={float(metrics["objective"]):.3f}', flush=True)
    median = statistics.median(times)
    cpu_median = statistics.median(cpu_times)
    print(f'shape: batch {args.batch_size} x length {args.length}, {args.num_layers} layers, d_model {args.d_model}, '
          f'{args.num_heads} heads x {args.head_dim}, mlp {args.mlp_dim}, vocab {args.vocab_size}, {args.dtype}, '
          f'scan_layers={args.scan_layers}, remat={args.remat_policy}, attention={args.attention_impl}; analytic {flops / 1e9:.1f} GFLOP/step')
    mfu = f', MFU {flops / median / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops:g} TFLOP/s' \
        if args.peak_tflops > 0 else ''
    print(f'median {median:.3f}s/step (min {min(times):.3f}s): {tokens / median:.0f} tokens/s, '
          f'{flops / median / 1e9:.1f} GFLOP/s{mfu}')
    # Process CPU time is steadier than wall time on a machine shared with other jobs; divided by
    # the core count it estimates the wall time on an otherwise idle machine.
    cores = len(os.sched_getaffinity(0))
    print(f'median process CPU {cpu_median:.3f}s/step over {cores} cores: idle-machine estimate '
          f'{tokens * cores / cpu_median:.0f} tokens/s')
    print(f'tokens_per_s={tokens / median:.1f} step_s={median:.4f}')


if __name__ == '__main__':
    main()
