"""Sampling speed: KV-cached decoding vs full recompute, tokens/s and seconds per clip.

    python bench/sampling.py                       # demo-size LM, t2v, 1280 output tokens, batch 1
    python bench/sampling.py --batch=4 --layers=24 --d_model=2048 --heads=16 --mlp=8192 \
        --visual_bits=18 --dtype=bfloat16          # the 1B shape (on an accelerator)

The output span is a text-to-video clip of latent shape (5, 16, 16) = 1280 visual tokens (+
3 markers), the paper's 128x128 clip. "cached" is `Sampler.sample` (prefill + KV-cached
while_loop), timed end to end after a warm-up compile. The recompute baseline
(`use_cache=False`) re-runs the whole fixed [batch, prefix + output] buffer at every step, so
each of its steps costs exactly one full forward: we time that forward and multiply by the
number of steps (running 1283 full forwards would take many minutes on a CPU), and check the
extrapolation against a real uncached run of --check_steps output tokens. A recompute that
grew its buffer step by step would do about half that work; the "growing recompute"
estimate (sum of forwards at lengths prefix+1 .. prefix+output, from timings at a few
lengths) is printed too.

Decoding collapse: with --collapse_check the cached sampler also runs with the repetition
safeguard on and off and prints the fraction of visual tokens equal to the token one latent
frame earlier and the longest run of one id (a random-init LM does not collapse, so on it
these figures only show the safeguard's cost; run it on a trained workdir's model).

Ends with a line: cached_tokens_per_s=<v> cached_s_per_clip=<v> recompute_s_per_clip=<v> speedup=<v>
"""
from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import numpy as np

from vp_jax import tasks
from vp_jax.model import Transformer
from vp_jax.model_config import TransformerConfig
from vp_jax.sampling import Sampler, SamplingOptions, prefix_batch
from vp_jax.vocabulary import Vocabulary


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--d_model', type=int, default=256)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--kv_heads', type=int, default=0)
    p.add_argument('--mlp', type=int, default=1024)
    p.add_argument('--visual_bits', type=int, default=10)
    p.add_argument('--latent_shape', type=str, default='5,16,16')
    p.add_argument('--text_length', type=int, default=16)
    p.add_argument('--dtype', type=str, default='float32')
    p.add_argument('--check_steps', type=int, default=16, help='real uncached run length to check the estimate')
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--collapse_check', action='store_true')
    return p.parse_args()


def timed(fn, repeats):
    fn()  # compile
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def repetition_figures(video_ids: np.ndarray) -> tuple[float, int]:
    """(fraction of tokens equal to the same spatial token one latent frame earlier, longest run)."""
    same = float(np.mean(video_ids[:, 1:] == video_ids[:, :-1]))
    flat = video_ids.reshape(video_ids.shape[0], -1)
    longest = 1
    for row in flat:
        run = 1
        for a, b in zip(row[:-1], row[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
    return same, longest


def main():
    args = parse_args()
    vocab = Vocabulary(visual_bits=args.visual_bits, audio_levels=4, audio_codebook_size=256, text_vocab_size=512)
    latent_shape = tuple(int(x) for x in args.latent_shape.split(','))
    geometry = tasks.Geometry(latent_shape, (4, 53), args.text_length)
    task = tasks.get_task('t2v')
    config = TransformerConfig(vocab_size=vocab.padded_size, num_layers=args.layers, d_model=args.d_model,
                               num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=args.d_model // args.heads,
                               mlp_dim=args.mlp, max_length=8192, dtype=args.dtype)
    model = Transformer(config)
    rng = np.random.default_rng(0)
    inputs = [tasks.build_sequence(task, dict(geometry.dummy_fields(), text_tokens=rng.integers(
        0, 512, args.text_length, dtype=np.int32)), vocab)[0] for _ in range(args.batch)]
    prefix = prefix_batch(inputs, task, vocab)
    constraints = tasks.output_constraints(task, geometry, vocab)
    output_length = constraints[0].size
    params = jax.jit(lambda r: nn.unbox(model.init(r, prefix)['params']))(jax.random.key(0))
    num_params = sum(x.size for x in jax.tree.leaves(params))
    sampler = Sampler(model)
    options = SamplingOptions(temperature=1.0, top_k=64)
    print(f'devices={jax.devices()} params={num_params / 1e6:.1f}M batch={args.batch} '
          f'prefix={prefix["input_tokens"].shape[1]} output={output_length} tokens (latents {latent_shape})')

    cached_s = timed(lambda: sampler.sample(params, prefix, constraints, jax.random.key(1), options), args.repeats)
    print(f'cached: {cached_s:.2f} s/clip-batch, {args.batch * output_length / cached_s:.1f} tokens/s')

    total = prefix['input_tokens'].shape[1] + output_length - 1
    forward = jax.jit(lambda p, b: model.apply({'params': p}, b))

    def forward_at(length):
        batch = {k: np.pad(v, [(0, 0), (0, length - v.shape[1])], constant_values=1 if k == 'segment_ids' else 0)
                 for k, v in prefix.items()}
        batch['positions'] = np.broadcast_to(np.arange(length, dtype=np.int32), batch['positions'].shape).copy()
        return timed(lambda: forward(params, batch).block_until_ready(), args.repeats)

    full_forward_s = forward_at(total)
    recompute_s = full_forward_s * output_length
    lengths = np.linspace(prefix['input_tokens'].shape[1], total, 4).astype(int)
    growing_s = float(np.mean([forward_at(int(n)) for n in lengths])) * output_length
    print(f'recompute: one full forward at length {total} = {full_forward_s * 1e3:.1f} ms -> '
          f'{recompute_s:.1f} s/clip-batch (fixed buffer), ~{growing_s:.1f} s (growing buffer estimate)')

    if args.check_steps:
        short = tuple(c[:args.check_steps] for c in constraints)
        check_s = timed(lambda: sampler.sample(params, prefix, short, jax.random.key(1), options,
                                               use_cache=False), 1)
        check_total = prefix['input_tokens'].shape[1] + args.check_steps - 1
        print(f'check: real uncached run of {args.check_steps} steps (buffer {check_total}) took {check_s:.2f} s '
              f'= {check_s / args.check_steps * 1e3:.1f} ms/step vs {forward_at(check_total) * 1e3:.1f} ms per '
              f'forward at that length')

    if args.collapse_check:
        for penalty in (0.0, 2.0):
            opts = SamplingOptions(temperature=1.0, top_k=64, repetition_penalty=penalty,
                                   repetition_window=latent_shape[1] * latent_shape[2] if penalty else 0)
            start = time.perf_counter()
            out = sampler.sample(params, prefix, constraints, jax.random.key(2), opts)
            video = tasks.split_output(task, out, geometry, vocab)['video']
            same, longest = repetition_figures(video)
            print(f'repetition_penalty={penalty}: same-as-previous-frame {same:.3f}, longest run {longest}, '
                  f'{time.perf_counter() - start:.2f} s incl. compile')

    print(f'cached_tokens_per_s={args.batch * output_length / cached_s:.1f} cached_s_per_clip={cached_s / args.batch:.3f} '
          f'recompute_s_per_clip={recompute_s / args.batch:.1f} speedup={recompute_s / cached_s:.1f}')


if __name__ == '__main__':
    main()
