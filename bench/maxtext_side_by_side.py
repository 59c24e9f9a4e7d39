"""Side-by-side train-step speed: MaxText's train loop vs bench/train_step.py, same shape and machine.

    python bench/maxtext_side_by_side.py --maxtext_python=/tmp/maxtext_venv/bin/python
    python bench/maxtext_side_by_side.py --maxtext_cmd='python -m maxtext.trainers.pre_train.train CONFIG.yml'

Runs MaxText (synthetic data, no checkpointing) and our bench alternately, MaxText first, for
--rounds rounds in subprocesses with the same environment and XLA_FLAGS (--cpu_xla_flags is
set for both; it must name --xla_cpu_experimental_ynn_fusion_type, which our train step's own
compile option (vp_jax/cpu_fusions.py) then leaves to XLA_FLAGS, so both sides compile alike;
--cpu_xla_flags=--xla_cpu_experimental_ynn_fusion_type= runs both without YNNPACK fusions).
The shape is the issue-2 comparison shape (4 layers, d_model 256, 4 heads x 64, SwiGLU 1024,
vocab 4096, length 512, batch 8, fp32, causal). MaxText's step time is the median of its
`completed step: N, seconds: S` log lines after --skip_steps; ours is bench/train_step.py's `tokens_per_s=`. The last line is
`ratio=<ours/maxtext>` (median tokens/s over rounds); without a working MaxText it says
so and exits 2. Each side's process-CPU seconds per step (MaxText's read from /proc at each
step line) are steadier than wall time on a shared machine: their quotient is `cpu_ratio`. MaxText's own defaults (scanned layers, full remat) apply unless
--maxtext_overrides changes them, e.g. 'scan_layers=false remat_policy=minimal_with_context'.

--maxtext_python takes a Python with the `maxtext` package (PyPI, 0.2.x layout) importable
and uses its configs/base.yml. On Python 3.11 MaxText 0.2.4 (jax >= 0.10.2) runs after
turning the two PEP 695 lines `type Implementation = ...` (kernels/mhc/api.py) and
`type KernelContext = ...` (kernels/mhc/common.py) into plain assignments.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading

from vp_jax.cpu_fusions import YNN_FUSION_OPTION, YNN_FUSIONS_FLAG

BATCH, LENGTH = 8, 512
SHAPE = (f'base_num_decoder_layers=4 base_emb_dim=256 base_num_query_heads=4 base_num_kv_heads=4 head_dim=64 '
         f'base_mlp_dim=1024 mlp_activations=[silu,linear] vocab_size=4096 max_target_length={LENGTH} '
         f'per_device_batch_size={BATCH} dtype=float32 weight_dtype=float32 attention=dot_product')
RUN = ('run_name=side_by_side base_output_directory=/tmp/maxtext_side_by_side hardware=cpu '
       'skip_jax_distributed_system=true dataset_type=synthetic enable_checkpointing=false enable_tensorboard=false')
STEP_LINE = re.compile(r'completed step: (\d+), seconds: ([\d.]+), TFLOP/s/device: ([\d.]+)')


class Unavailable(RuntimeError):
    pass


def maxtext_command(args: argparse.Namespace) -> list[str]:
    if args.maxtext_cmd:
        base = shlex.split(args.maxtext_cmd)
    elif args.maxtext_python:
        probe = subprocess.run([args.maxtext_python, '-c', 'import os, maxtext.configs as c; '
                                'print(os.path.join(os.path.dirname(c.__file__), "base.yml"))'],
                               capture_output=True, text=True)
        if probe.returncode:
            raise Unavailable(f'{args.maxtext_python} cannot import maxtext: {probe.stderr.strip()[-600:]}')
        base = [args.maxtext_python, '-m', 'maxtext.trainers.pre_train.train', probe.stdout.strip()]
    else:
        raise Unavailable('no MaxText given: pass --maxtext_python or --maxtext_cmd')
    return base + f'{RUN} {SHAPE} steps={args.steps}'.split() + shlex.split(args.maxtext_overrides)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and its descendants so far (Linux /proc)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rpartition(')')[2].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
        for tid in os.listdir(f'/proc/{pid}/task'):
            with open(f'/proc/{pid}/task/{tid}/children') as f:
                total += sum(cpu_seconds(int(child)) for child in f.read().split())
        return total
    except (OSError, IndexError, ValueError):
        return 0.0


def run(cmd: list[str], env: dict[str, str], timeout: float, pattern: re.Pattern | None = None):
    """Output of `cmd`, and per match of `pattern` in it (line by line): (match groups, child CPU seconds)."""
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise Unavailable(f'{shlex.join(cmd[:4])} ...: {e}') from e
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines, hits = [], []
    for line in proc.stdout:
        lines.append(line)
        if pattern and (match := pattern.search(line)):
            hits.append((match.groups(), cpu_seconds(proc.pid)))
    timer.cancel()
    out = ''.join(lines)
    if proc.wait():
        raise Unavailable(f'{shlex.join(cmd[:4])} ... exited {proc.returncode}:\n{out[-1500:]}')
    return out, hits


def maxtext_round(cmd: list[str], env: dict[str, str], args: argparse.Namespace) -> tuple[float, float, float]:
    """Steady-state (tokens/s, process-CPU s/step, TFLOP/step as MaxText counts it)."""
    _, hits = run(cmd, env, args.timeout, STEP_LINE)
    steps = [(int(n), float(s), float(t), cpu) for (n, s, t), cpu in hits]
    steady = [(s, t, cpu - prev[3]) for prev, (n, s, t, cpu) in zip(steps, steps[1:]) if n > args.skip_steps]
    if not steady:
        raise Unavailable(f'MaxText printed {len(steps)} `completed step` lines, none after step {args.skip_steps}')
    return (BATCH * LENGTH / statistics.median(s for s, _, _ in steady), statistics.median(c for _, _, c in steady),
            statistics.median(s * t for s, t, _ in steady))


def ours_round(env: dict[str, str], args: argparse.Namespace) -> tuple[float, float, float]:
    """Median (tokens/s, process-CPU s/step, analytic TFLOP/step) of bench/train_step.py."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_step.py'),
           f'--steps={args.ours_steps}', '--cpu_xla_flags=']
    out, _ = run(cmd, env, args.timeout)
    tps, cpu, gflop = (float(re.search(pattern, out).group(1)) for pattern in (
        r'tokens_per_s=([\d.]+)', r'median process CPU ([\d.]+)s/step', r'analytic ([\d.]+) GFLOP/step'))
    return tps, cpu, gflop / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--maxtext_python', help='a Python that can import maxtext')
    parser.add_argument('--maxtext_cmd', help='MaxText train command up to and including its config file')
    parser.add_argument('--maxtext_overrides', default='', help='extra MaxText key=value settings')
    parser.add_argument('--cpu_xla_flags', default=YNN_FUSIONS_FLAG,
                        help=f'appended to XLA_FLAGS for both sides; must name --{YNN_FUSION_OPTION}')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--steps', type=int, default=20, help='MaxText steps per round')
    parser.add_argument('--skip_steps', type=int, default=3, help='MaxText steps left out (compile, warm-up)')
    parser.add_argument('--ours_steps', type=int, default=10)
    parser.add_argument('--timeout', type=float, default=1800, help='seconds per subprocess')
    args = parser.parse_args()
    if f'--{YNN_FUSION_OPTION}' not in f"{os.environ.get('XLA_FLAGS', '')} {args.cpu_xla_flags}":
        parser.error(f'--cpu_xla_flags must name --{YNN_FUSION_OPTION} (with an empty value for none): '
                     "otherwise our step compiles with YNNPACK fusions and MaxText's does not.")

    env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {args.cpu_xla_flags}".strip()
    print(f'XLA_FLAGS={env["XLA_FLAGS"]!r}; load average {os.getloadavg()[0]:.2f}', flush=True)
    cores = len(os.sched_getaffinity(0))
    results = {'maxtext': [], 'ours': []}
    try:
        cmd = maxtext_command(args)
        for r in range(args.rounds):
            for name, one_round in (('maxtext', lambda: maxtext_round(cmd, env, args)),
                                    ('ours', lambda: ours_round(env, args))):
                tps, cpu, tflop = one_round()
                results[name].append((tps, cpu))
                idle = f'{BATCH * LENGTH * cores / cpu:.0f}' if cpu > 0 else 'n/a'
                print(f'round {r + 1} {name:8s} {tps:7.1f} tokens/s; process CPU {cpu:.2f}s/step '
                      f'({idle} tokens/s idle-machine estimate on {cores} cores); '
                      f'{tflop:.4f} TFLOP/step as {name} counts it; load average {os.getloadavg()[0]:.2f}', flush=True)
    except Unavailable as e:
        print(f'MaxText not available or failed; no comparison made.\n{e}')
        sys.exit(2)
    (theirs, theirs_cpu), (ours, ours_cpu) = ((statistics.median(tps for tps, _ in results[name]),
                                               statistics.median(cpu for _, cpu in results[name]))
                                              for name in ('maxtext', 'ours'))
    print(f'maxtext_tokens_per_s={theirs:.1f} ours_tokens_per_s={ours:.1f} '
          f'cpu_ratio={theirs_cpu / ours_cpu if ours_cpu else float("nan"):.3f} '
          f'(MaxText / our process-CPU seconds per step)')
    print(f'ratio={ours / theirs:.3f}')

if __name__ == '__main__':
    main()
