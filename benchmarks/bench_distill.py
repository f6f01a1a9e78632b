"""Wall time and matmul throughput of one MBML distillation update at the paper's sizes.

Prints (does not assert) the seconds per `MBML.update` and its achieved FLOP/s against a plain `torch.mm`
of the size of the largest layers, measured in the same run. FLOPs are the matmul FLOPs of one update
as `torch.utils.flop_counter` counts them (forward and backward of the trained networks, forward of the
frozen BCQ teachers), printed beside the 3×-forward estimate of the trained networks. Goal: ≥ 50% of the
`torch.mm` rate.

    .venv/bin/python benchmarks/bench_distill.py                 # paper sizes: K=10, 9/7/8×1024, batch 128
    .venv/bin/python benchmarks/bench_distill.py --threads 1 --steps 3 --tasks 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mtrl.algos.bcq import BCQConfig, BCQPolicy
from mtrl.algos.mbml import MBML, VARIANTS, MBMLConfig, TeacherTargets
from mtrl.nn import precision

OBS, ACT = 27, 8  # AntDir


def linear_flops(module: nn.Module, rows: int) -> int:
    """2·rows·in·out summed over the Linear layers of `module` (one forward pass)."""
    return sum(
        2 * rows * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear)
    )


def mm_rate(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """FLOP/s of `repeats` torch.mm(a, b)."""
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (after 2 warm-up updates)")
    parser.add_argument("--variant", default="mbml", choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = MBMLConfig()
    # BCQ reference sizes (actor / critic 400-300, VAE 750-750, latent 2·act_dim), K tasks as one batched model
    teachers = BCQPolicy(BCQConfig(), OBS, ACT, 1.0, "cpu", tasks=args.tasks, seeds=list(range(args.tasks)))
    algo = MBML(cfg, OBS, ACT, 1.0, teachers, "cpu", variant=args.variant)
    batch = {key: torch.randn(shape) for key, shape in algo.batch_shapes().items()}
    if "relabel_mask" in batch:
        batch["relabel_mask"] = batch["relabel_mask"] > -1.0  # ~84% confident
    context_rows = batch["context"].numel() // algo.context_dim  # rows the encoder sees: c_i (and c̃_i)
    if args.variant in ("mbml", "no-triplet"):
        context_rows += args.tasks * cfg.relabelled_context_size

    rows = args.tasks * cfg.batch_size
    estimate = 3 * (  # forward + backward of the trained networks (the frozen teachers add their forward)
        linear_flops(algo.q_d, rows)
        + linear_flops(algo.g_d, rows)
        + linear_flops(algo.xi_d, rows)
        + linear_flops(algo.encoder, context_rows)
    )

    for _ in range(2):
        algo.update(batch)
    with FlopCounterMode(display=False) as counter:  # the matmul FLOPs of one update, teachers included
        algo.update(batch)
    flops = counter.get_total_flops()
    # Rounds alternate one update and a stretch of torch.mm, so that other jobs on a shared machine slow
    # both alike; the medians over rounds are reported.
    a, b = torch.randn(rows, 1024), torch.randn(1024, 1024)
    seconds, peaks = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        algo.update(batch)
        seconds.append(time.perf_counter() - start)
        peaks.append(mm_rate(a, b, repeats=20))
    ratio = statistics.median(flops / t / p for t, p in zip(seconds, peaks, strict=True))
    seconds, peak = statistics.median(seconds), statistics.median(peaks)

    params = sum(p.numel() for p in algo.networks.parameters())
    print(
        f"MBML distill update, variant {args.variant}: K={args.tasks} tasks, batch {cfg.batch_size}/task, "
        f"Q_D/G_D/xi_D {len(cfg.q_hidden)}/{len(cfg.g_hidden)}/{len(cfg.xi_hidden)}x1024, "
        f"{params / 1e6:.1f}M trained parameters, torch threads {torch.get_num_threads()}"
    )
    print(
        f"  matmul FLOPs per update: {flops / 1e9:.1f} G (torch.utils.flop_counter; "
        f"estimate 3x forward of the trained nets: {estimate / 1e9:.1f} G)"
    )
    print(f"  wall time per update:    {seconds * 1e3:.0f} ms (median of {args.steps} rounds)")
    print(f"  achieved:                {flops / seconds / 1e9:.1f} GFLOP/s")
    print(f"  torch.mm peak:           {peak / 1e9:.1f} GFLOP/s ([{rows}, 1024] x [1024, 1024])")
    print(f"  ratio achieved / peak:   {ratio:.0%} (median over rounds; goal >= 50%)")
    compare_teachers(algo, batch, args.steps)
    compare_precisions(algo, batch, args.steps, flops, a, b)


def compare_precisions(algo: MBML, batch: dict, rounds: int, flops: float, a: torch.Tensor, b: torch.Tensor) -> None:
    """One update in fp32 against one under bf16 autocast (`distill.precision: bf16`), alternating rounds, and
    each against torch.mm in its own precision; medians reported."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for name in times:
            with precision(name, "cpu"):
                start = time.perf_counter()
                algo.update(batch)
                times[name].append(time.perf_counter() - start)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    peak = mm_rate(a.bfloat16(), b.bfloat16(), repeats=20)
    print(f"  bf16 autocast: {bf16 * 1e3:.0f} ms per update vs fp32 {fp32 * 1e3:.0f} ms, speed-up {fp32 / bf16:.2f}x; "
          f"{flops / bf16 / 1e9:.1f} GFLOP/s = {flops / bf16 / peak:.0%} of the bf16 torch.mm rate "
          f"({peak / 1e9:.1f} GFLOP/s)")


def looped_teacher_targets(singles: list[BCQPolicy], latent_dim: int, obs, actions) -> TeacherTargets:
    """The teachers as distill queried them before the task axis: one single-task BCQ after another."""
    latent = torch.randn(*obs.shape[:2], latent_dim).clamp(-0.5, 0.5)
    q, candidate, correction = [], [], []
    for i, teacher in enumerate(singles):
        q.append(teacher.critic.q1(obs[i : i + 1], actions[i : i + 1])[0])
        a_hat = teacher.vae.decode(obs[i : i + 1], latent[i : i + 1])
        candidate.append(a_hat[0])
        correction.append((teacher.actor(obs[i : i + 1], a_hat) - a_hat)[0])
    return TeacherTargets(latent, torch.stack(q), torch.stack(candidate), torch.stack(correction))


@torch.no_grad()
def compare_teachers(algo: MBML, batch: dict, rounds: int) -> None:
    """The frozen teachers' targets for one update: one K-task model vs a loop over K single-task models (the
    same weights), alternating rounds, medians reported."""
    states = algo.teachers.task_policy_states()
    singles = [BCQPolicy.from_policy_state(algo.teachers.cfg, state) for state in states]
    obs, actions = batch["observations"], batch["actions"]
    times: dict[str, list[float]] = {"batched": [], "looped": []}
    for _ in range(max(rounds, 3) * 4):
        for name, run in (("batched", lambda: algo._teacher_targets(obs, actions)),
                          ("looped", lambda: looped_teacher_targets(singles, algo.latent_dim, obs, actions))):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    batched, looped = statistics.median(times["batched"]), statistics.median(times["looped"])
    print(f"  teacher targets (K={algo.tasks}): batched {batched * 1e3:.1f} ms, looped {looped * 1e3:.1f} ms, "
          f"speed-up {looped / batched:.2f}x")


if __name__ == "__main__":
    main()
