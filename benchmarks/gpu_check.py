"""The measuring half of benchmarks/gpu_check.sh (issue 15): what the paper profile costs on one GPU.

`slice`: HalfCheetahVel's paper profile, stage by stage (`mtrl collect`, `mtrl train-bcq`, ...), with the budgets
cut down by `--set`. Each stage runs twice, at budgets b1 < b2 of its scaled quantity (env steps, updates,
episodes, ...), with the stage's other budgets (warm-up, evaluation episodes, rollouts) in the same proportion
as in the paper profile. The per-job times of the log's "<stage> <job>: done in Xs" lines give the marginal
cost, (t2 - t1) / (b2 - b1), free of the per-job start-up (CUDA context, imports, loading data, writing
artifacts) that a single slice would multiply by full/slice (up to ~1000x for train-baseline); so

    projected job  = t2 + (full - b2) * (t2 - t1) / (b2 - b1)
    projected stage = non-job time of the b2 command (process start-up) + the projected jobs, spread over the
                      workers like the slice's (all jobs at once when there are no more than --workers)

distill and train-baseline also pay their periodic evaluations (paper: every 10 epochs), projected from the
`evaluate` stage's marginal seconds per episode of the same policy. Not projected: checkpoint writes (paper:
every 10 epochs / 10 000-20 000 steps) and the first 1 000-step episode of sac-init's rollout. The GPU is
sampled with nvidia-smi every second; mean utilisation per stage and overall is printed.

`flops`: one MBML distillation update at the paper's sizes (K tasks, Q_D/G_D/xi_D 9/7/8 x 1024, batch 128 per
task) timed with synchronisation, its matmul FLOPs counted by torch.utils.flop_counter, against torch.mm of
[128*K, 1024] x [1024, 1024] in the same run; in fp32 and with TF32 allowed. (As benchmarks/bench_distill.py,
self-contained so that changes to that benchmark do not break the device check.)

    python benchmarks/gpu_check.py flops --device cuda
    python benchmarks/gpu_check.py slice --device cuda --workers 10 --run-dir /tmp/hcv --deadline 300
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

CONFIG = Path("configs/half_cheetah_vel.yaml")
FAMILY = "HalfCheetahVel"


# ------------------------------------------------------------------------------------------------ slice
def get(config, key: str):
    return reduce(getattr, key.split("."), config)


def scaled(c, b: int, total: str, *keys: str) -> dict[str, int]:
    """`keys` at budget b in their paper proportion to `total` (e.g. SAC's random warm-up, 1/6 of the steps)."""
    return {key: max(1, round(b * get(c, key) / get(c, total))) for key in keys}


def evals(c, section: str) -> dict[str, int]:
    """One evaluation episode as often as the paper profile plays one (5 every 5 000 steps: 1 every 1 000); exact
    for budgets that are multiples of that interval."""
    return {f"{section}.eval_every": get(c, f"{section}.eval_every") // get(c, f"{section}.eval_episodes"),
            f"{section}.eval_episodes": 1}


@dataclass(frozen=True)
class Slice:
    stage: str  # the mtrl command
    quantity: str  # what the budget counts, per task (per policy for the multi-task stages)
    points: tuple[int, int]  # budgets b1 < b2 of the GPU check
    quick: tuple[int, int]  # budgets of QUICK=1
    full: Callable  # paper config -> the paper budget of the quantity
    sets: Callable  # (paper config, b) -> the --set overrides giving budget b


SLICES = [
    Slice("collect", "env steps", (1000, 3000), (300, 600), lambda c: c.collect.steps,
          lambda c, b: {"collect.steps": b, **scaled(c, b, "collect.steps", "collect.sac.random_steps"),
                        **evals(c, "collect")}),
    Slice("train-bcq", "updates", (1000, 3000), (100, 200), lambda c: c.bcq.steps,
          lambda c, b: {"bcq.steps": b, **evals(c, "bcq")}),
    Slice("fit-rewards", "steps", (500, 2000), (100, 200), lambda c: c.rewards.steps,
          lambda c, b: {"rewards.steps": b}),
    Slice("relabel", "rows/task", (1000, 3000), (200, 400), lambda c: min(c.relabel.max_transitions, c.collect.steps),
          lambda c, b: {"relabel.max_transitions": b}),
    Slice("distill", "updates", (100, 400), (5, 10), lambda c: c.distill.epochs * c.distill.steps_per_epoch,
          lambda c, b: {"distill.epochs": 1, "distill.steps_per_epoch": b, "distill.eval_every": 0}),
    Slice("train-baseline", "steps", (50, 150), (3, 6), lambda c: c.baselines.epochs * c.baselines.steps_per_epoch,
          lambda c, b: {"baselines.epochs": 1, "baselines.steps_per_epoch": b, "baselines.eval_every": 0}),
    # an episode here is one episode in every train and test task, run in lockstep
    Slice("evaluate", "episodes", (1, 3), (1, 2), lambda c: c.evaluate.episodes * c.evaluate.repeats,
          lambda c, b: {"evaluate.episodes": b, "evaluate.skip_episodes": 0, "evaluate.repeats": 1}),
    Slice("sac-init", "env steps", (1000, 2000), (300, 600), lambda c: c.sac_init.steps,
          lambda c, b: {"sac_init.steps": b, **evals(c, "sac_init"),
                        **scaled(c, b, "sac_init.steps", "sac_init.warmup_steps", "sac_init.sac.random_steps",
                                 "sac_init.rollout_steps", "sac_init.imitation_steps")}),
]
# QUICK=1 (smoke profile): that profile trains no baselines; add them, Contextual BCQ at a CPU-friendly size
QUICK_SETS = ["baselines.algos=[contextual-bcq,batch-pearl]", *(f"baselines.contextual-bcq.{net}_hidden=[64,64]"
                                                                 for net in ("critic", "vae", "actor"))]
MULTI_TASK = ("distill", "train-baseline")  # their periodic evaluations are projected from `evaluate`
DONE = re.compile(r" INFO (\S+) (.+?): done in ([0-9.]+)s$")
TO_RUN = re.compile(r" INFO (\S+): (\d+) to run")


class GpuSampler:
    """nvidia-smi --query-gpu=utilization.gpu,memory.used every second, in the background, with our timestamps."""

    def __init__(self, csv_path: Path):
        self.samples: list[tuple[float, float, float]] = []  # (monotonic time, utilisation %, memory MiB)
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "--loop=1"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, args=(csv_path,), daemon=True).start()

    def _read(self, csv_path: Path) -> None:
        with open(csv_path, "w") as csv:
            csv.write("seconds,utilization.gpu [%],memory.used [MiB]\n")
            for line in self.proc.stdout:
                try:
                    util, mem = (float(x) for x in line.split(","))
                except ValueError:
                    continue
                self.samples.append((time.monotonic(), util, mem))
                csv.write(f"{self.samples[-1][0]:.1f},{util:g},{mem:g}\n")
                csv.flush()

    def stats(self, spans) -> str:
        rows = [(u, m) for t, u, m in self.samples if any(a <= t <= b for a, b in spans)]
        if not rows:
            return "-" if self.proc else "no nvidia-smi"
        return f"{statistics.mean(u for u, _ in rows):.0f}% (max mem {max(m for _, m in rows) / 1024:.1f} GiB)"

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()


def run_command(cmd: list[str], log_path: Path, timeout: float) -> tuple[int, float]:
    """Run in its own process group (the stage's workers too), output to log_path; kill the group on timeout."""
    start = time.monotonic()
    with open(log_path, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
    return rc, time.monotonic() - start


def read_jobs(log_path: Path, offset: int, stage: str) -> tuple[dict[str, float], int]:
    """The jobs of `stage` logged after `offset`: {job key: seconds}, and how many units it ran."""
    text = log_path.read_text()[offset:] if log_path.exists() else ""
    jobs, units = {}, 0
    for line in text.splitlines():
        if (m := DONE.search(line)) and m[1] == stage:
            jobs[m[2]] = float(m[3])
        elif (m := TO_RUN.search(line)) and m[1] == stage:
            units = int(m[2])
    return jobs, units


def fmt_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def slice_check(args) -> int:
    from mtrl.config import load_config
    from mtrl.pipeline.registry import get_stage
    from mtrl.pipeline.run_data import n_test_tasks

    deadline = time.monotonic() + args.deadline
    run_dir, workers = Path(args.run_dir), args.workers
    run_dir.mkdir(parents=True, exist_ok=True)
    profile = "smoke" if args.quick else "paper"  # QUICK: the smoke profile's tiny networks, 2+2 tasks
    paper = load_config(CONFIG, "paper")
    test_tasks = n_test_tasks(load_config(CONFIG, profile))
    per_test_task = len(paper.sac_init.baselines) + len(paper.sac_init.policies)
    # sac-init: only as many test tasks as fill the workers once (its runs x test tasks are projected)
    sac_tasks = max(1, min(test_tasks, workers // per_test_task))
    extra_args = {"sac-init": ["--tasks", f"0-{sac_tasks - 1}"]}
    log_path, out_path = run_dir / "logs" / "mtrl.log", run_dir / "commands.log"
    sampler = GpuSampler(run_dir / "gpu_util.csv")
    print(f"HalfCheetahVel, profile {profile} sliced, --device {args.device} --workers {workers}; each stage at two "
          f"budgets b1, b2 (commands and their output: {out_path})", flush=True)
    measured = {}  # stage -> (b1, b2, jobs1, jobs2, units2, wall2, spans)
    for s in SLICES:
        b1, b2 = (max(1, round(b * args.scale)) for b in (s.quick if args.quick else s.points))
        if b2 <= b1:
            b2 = b1 + 1
        runs, spans = [], []
        for b in (b1, b2):
            left = deadline - time.monotonic()
            if left < 15:
                print(f"  {s.stage} @ {b}: skipped, the time limit is reached", flush=True)
                break
            sets = [f"{k}={v}" for k, v in s.sets(paper, b).items()] + (QUICK_SETS if args.quick else [])
            cmd = [sys.executable, "-m", "mtrl", s.stage, "--config", str(CONFIG), "--profile", profile,
                   "--run-dir", str(run_dir), "--device", args.device, "--workers", str(workers),
                   *extra_args.get(s.stage, []), *(x for kv in sets for x in ("--set", kv))]
            offset = log_path.stat().st_size if log_path.exists() else 0
            t0 = time.monotonic()
            rc, wall = run_command(cmd, out_path, left)
            spans.append((t0, t0 + wall))
            jobs, units = read_jobs(log_path, offset, s.stage)
            status = "ok" if rc == 0 else "TIME LIMIT" if rc == 124 else f"FAILED (exit {rc})"
            job_info = f"{len(jobs)} jobs, mean {statistics.mean(jobs.values()):.1f} s" if jobs else "no jobs logged"
            print(f"  {s.stage:<14} @ {b:>5} {s.quantity:<9} {status}: {wall:6.1f} s wall, {job_info}; "
                  f"GPU {sampler.stats(spans[-1:])}", flush=True)
            if rc != 0:
                print("    " + "\n    ".join(out_path.read_text().splitlines()[-15:]), flush=True)
                break
            runs.append((jobs, units, wall))
        if len(runs) < 2 or not runs[1][0] or set(runs[0][0]) != set(runs[1][0]):
            break  # later stages need this one's outputs
        measured[s.stage] = (b1, b2, runs[0][0], runs[1][0], runs[1][1], runs[1][2], spans)
    sampler.stop()

    # ---- projection to the paper budgets
    def projected_jobs(stage: str) -> dict[str, float]:
        b1, b2, jobs1, jobs2, *_ = measured[stage]
        full = next(s for s in SLICES if s.stage == stage).full(paper)
        return {k: t2 + (full - b2) * max(0.0, t2 - jobs1[k]) / (b2 - b1) for k, t2 in jobs2.items()}

    def eval_seconds(policy: str) -> float:
        """One periodic evaluation of `policy` at the paper's episodes (from evaluate's marginal cost)."""
        if "evaluate" not in measured:
            return math.nan
        b1, b2, jobs1, jobs2, *_ = measured["evaluate"]
        return paper.evaluate.episodes * max(0.0, jobs2[policy] - jobs1[policy]) / (b2 - b1)

    print(f"\nProjection to the paper profile (per seed, --workers {workers}; 'rate' is the marginal rate of all "
          f"jobs together):", flush=True)
    print(f"  {'stage':<14} {'b1 -> b2':>11} {'paper':>7} {'quantity':<9} {'job s b1/b2':>13} {'rate /s':>9} "
          f"{'projected':>10}  GPU util", flush=True)
    total, noisy = 0.0, False
    for s in SLICES:
        if s.stage not in measured:
            print(f"  {s.stage:<14} not measured", flush=True)
            continue
        b1, b2, jobs1, jobs2, units2, wall2, spans = measured[s.stage]
        full = s.full(paper)
        proj = projected_jobs(s.stage)
        if s.stage in MULTI_TASK:  # + the periodic evaluations of the paper profile
            cfg = paper.distill if s.stage == "distill" else paper.baselines
            n_evals = math.ceil(cfg.epochs / cfg.eval_every) if cfg.eval_every else 0
            proj = {k: t + n_evals * eval_seconds(k) for k, t in proj.items()}
        units_full = len(get_stage(s.stage).units(paper, run_dir))
        busy2 = max(max(jobs2.values()), sum(jobs2.values()) / workers)
        stage_s = max(0.0, wall2 - busy2) + max(max(proj.values()),
                                                sum(proj.values()) * units_full / max(1, units2) / workers)
        total += stage_s
        # all jobs together: per job (b2 - b1) / (t2 - t1), times the tasks it trains, as many at once as workers
        if all(jobs2[k] > jobs1[k] for k in jobs2):
            rate = sum((b2 - b1) / (jobs2[k] - jobs1[k]) for k in jobs2) * max(1, units2) / len(jobs2) \
                * min(1.0, workers / len(jobs2))
            rate_text = f"{rate:9.1f}"
        else:
            rate_text, noisy = f"{'t2<=t1':>9}", True
        times = f"{statistics.mean(jobs1.values()):.1f}/{statistics.mean(jobs2.values()):.1f}"
        print(f"  {s.stage:<14} {b1:>5}->{b2:<5} {full:>7} {s.quantity:<9} {times:>13} {rate_text} "
              f"{fmt_time(stage_s):>10}  {sampler.stats(spans)}", flush=True)
    if sampler.samples:
        print(f"  GPU utilisation over the whole slice: {sampler.stats([(0, math.inf)])}", flush=True)
    if noisy:
        print("  t2<=t1: a job was not slower at b2 than at b1 (noise); its projection is t2 alone: raise "
              "BUDGET_SCALE", flush=True)
    complete = len(measured) == len(SLICES)
    print(f"  projected total per seed: {total:.0f} s = {total / 3600:.1f} h"
          + ("" if complete else " -- INCOMPLETE: not every stage was measured"), flush=True)
    return 0 if complete else 1


# ------------------------------------------------------------------------------------------------ flops
def make_teachers(k: int, obs: int, act: int, device: str):
    """K frozen BCQ teachers at the reference sizes (actor/critic 400-300, VAE 750-750)."""
    from mtrl.algos.bcq import BCQConfig, BCQPolicy

    try:  # one task-batched model
        return BCQPolicy(BCQConfig(), obs, act, 1.0, device, tasks=k)
    except TypeError:  # mtrl before task batching: a list of per-task teachers
        return [BCQPolicy(BCQConfig(), obs, act, 1.0, device) for _ in range(k)]


def flops_check(args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mtrl.algos.mbml import MBML, MBMLConfig
    from mtrl.envs.registry import get_family

    dev, k = args.device, args.tasks
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    spec = get_family(FAMILY).spec
    torch.manual_seed(0)
    cfg = MBMLConfig()
    algo = MBML(cfg, spec.obs_dim, spec.act_dim, 1.0, make_teachers(k, spec.obs_dim, spec.act_dim, dev), dev)
    batch = {key: torch.randn(shape, device=dev) for key, shape in algo.batch_shapes().items()}
    if "relabel_mask" in batch:
        batch["relabel_mask"] = batch["relabel_mask"] > -1.0  # ~84% confident
    algo.update(batch)
    with FlopCounterMode(display=False) as counter:  # matmul FLOPs: trained nets fwd+bwd, teachers fwd
        algo.update(batch)
    flops = counter.get_total_flops()
    rows = k * cfg.batch_size
    a, b = torch.randn(rows, 1024, device=dev), torch.randn(1024, 1024, device=dev)
    params = sum(p.numel() for p in algo.networks.parameters())
    print(f"MBML distill update on {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else 'CPU'}): K={k}, "
          f"batch {cfg.batch_size}/task, Q_D/G_D/xi_D {len(cfg.q_hidden)}/{len(cfg.g_hidden)}/{len(cfg.xi_hidden)}"
          f"x1024, {params / 1e6:.1f}M trained parameters, {flops / 1e9:.1f} GFLOP (matmul) per update")

    def timed(fn, n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - start) / n

    big = torch.randn(8192, 8192, device=dev) if dev == "cuda" else None  # the GPU's peak, for scale
    # distill.precision: fp32, tf32 (TF32 matmuls allowed) and bf16 (autocast), each against torch.mm in its own
    # arithmetic
    for label, precision, bf16 in (("fp32", "highest", False), ("TF32 allowed", "high", False),
                                   ("bf16 autocast", "highest", True)):
        torch.set_float32_matmul_precision(precision)
        mm_a, mm_b = (a.bfloat16(), b.bfloat16()) if bf16 else (a, b)

        def update(bf16=bf16):
            with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=bf16):
                algo.update(batch)

        for _ in range(2):  # warm-up: kernels for this precision
            update()
            torch.mm(mm_a, mm_b)
        seconds, peaks = [], []
        for _ in range(args.rounds):  # alternate, so that a busy machine slows both alike; medians reported
            seconds.append(timed(update, args.updates))
            peaks.append(2 * rows * 1024 * 1024 / timed(lambda x=mm_a, y=mm_b: torch.mm(x, y), 20 * args.updates))
        t, peak = statistics.median(seconds), statistics.median(peaks)
        ratio = statistics.median(flops / s / p for s, p in zip(seconds, peaks, strict=True))
        line = (f"  {label:<13} {t * 1e3:8.2f} ms/update, {flops / t / 1e12:7.3g} TFLOP/s achieved; torch.mm "
                f"[{rows},1024]x[1024,1024] {peak / 1e12:7.3g} TFLOP/s; ratio {ratio:.0%}")
        if big is not None:
            torch.mm(big, big)
            line += f"; 8192^3 torch.mm {2 * 8192 ** 3 / timed(lambda: torch.mm(big, big), 5) / 1e12:.0f} TFLOP/s"
        print(line, flush=True)
    torch.set_float32_matmul_precision("highest")
    if dev == "cuda":
        print(f"  peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("slice", help="the HalfCheetahVel paper-profile slice and its projection")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every slice budget")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds; stages that do not fit are skipped")
    p.add_argument("--quick", action="store_true", help="smoke-profile networks, tiny budgets (a CPU test)")
    p = sub.add_parser("flops", help="FLOP/s of the MBML distill update against torch.mm")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--updates", type=int, default=10, help="updates per timed round")
    args = parser.parse_args()
    return slice_check(args) if args.command == "slice" else flops_check(args)


if __name__ == "__main__":
    sys.exit(main())
