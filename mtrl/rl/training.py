"""The epoch loop of the multi-task methods (distill, train-baseline): updates, periodic evaluation, checkpoints
and the policies/<name>.h5 artifact, the same for every method so `mtrl evaluate` treats them alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mtrl.configlib import to_dict
from mtrl.data import to_torch
from mtrl.methods import get_method
from mtrl.nn import precision, require_finite, to_numpy_tree, to_torch_tree
from mtrl.pipeline.base import UnitContext
from mtrl.rl.evaluation import evaluation_seed, run_evaluation
from mtrl.rl.health import task_inference_health
from mtrl.rl.policies import EmbeddingPolicy

HEALTH_CURVE = ("epochs", "kl", "separability", "identification", "identification_online")


@dataclass
class EpochProgress:
    """Where a multi-task training run stands (checkpointed): epochs done, mean losses, evaluation curve."""

    epoch: int = 0
    losses: dict[str, list[float]] = field(default_factory=dict)  # metric -> mean per epoch
    eval_curve: list[list[float]] = field(default_factory=list)  # [epoch, train score, test score]
    # [epoch, KL, separability, identification (training-size contexts), online identification (scored episodes)]
    health_curve: list[list[float]] = field(default_factory=list)



def train_policy(ctx: UnitContext, algo, sample, cfg, dist, method: str, algo_cfg, datasets: list[dict]) -> None:
    """The epoch loop of the multi-task stages (distill, train-baseline), ending in the unit's "policy" output.

    `algo` has the multi-task face (update, state_dict, policy_state_dict, sample_z, posterior, act); `sample(rng)`
    draws one batch of NumPy arrays; `cfg` gives epochs, steps_per_epoch, eval_every and checkpoint_every;
    `datasets` are the training tasks' (the task-inference health of every evaluation reads them). Resumes from the
    unit's checkpoint. The artifact holds the weights, per-epoch mean losses, the Alg. 5 scores and the health
    (`mtrl.rl.health`) of the periodic evaluations, and attributes `method` (the registry entry `mtrl evaluate`
    builds it from) and `algo_config`.
    """
    rng = np.random.default_rng(ctx.seed)
    training_size = get_method(method).training_context_size(algo_cfg)  # the health's training context size
    run = EpochProgress()
    saved = ctx.checkpointer.load()
    if saved is not None:
        algo.load_state_dict(to_torch_tree(saved["algo"], ctx.device))
        rng.bit_generator.state = saved["rng"]
        run = EpochProgress(**saved["run"])
        ctx.log.info(f"{ctx.stage.name} {ctx.unit.key}: resuming at epoch {run.epoch}")

    bar = ctx.progress(cfg.epochs * cfg.steps_per_epoch, unit="update", initial=run.epoch * cfg.steps_per_epoch)
    while run.epoch < cfg.epochs:
        sums: dict[str, float] = {}
        for _ in range(cfg.steps_per_epoch):
            with precision(cfg.precision, ctx.device):
                metrics = algo.update(to_torch(sample(rng), ctx.device))
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
        run.epoch += 1
        for key, total in sums.items():
            run.losses.setdefault(key, []).append(total / cfg.steps_per_epoch)
        bar.set_postfix(loss=f"{run.losses['total'][-1]:.3g}" if "total" in run.losses else "")
        if cfg.eval_every and (run.epoch % cfg.eval_every == 0 or run.epoch == cfg.epochs):
            evaluate = ctx.config.evaluate
            policy = EmbeddingPolicy(algo, seed=ctx.seed + run.epoch, belief=evaluate.belief)
            with UnitContext.evaluating([ctx]):
                result = run_evaluation(dist, policy, evaluate, evaluation_seed(ctx.config))
                health = task_inference_health(algo.posterior, datasets, {"training": training_size},
                                               evaluate.health_sets, evaluate.belief,
                                               np.random.default_rng(ctx.seed + run.epoch), result["train_beliefs"])
            run.eval_curve.append([run.epoch, result["train_score"], result["test_score"]])
            online = health["identification_online"][evaluate.skip_episodes:]
            run.health_curve.append([run.epoch, *(float(health[key][0]) for key in HEALTH_CURVE[1:4]),
                                     float(online.mean()) if len(online) else float("nan")])
            ctx.log.info(f"{ctx.stage.name} {ctx.unit.key} epoch {run.epoch}: train {result['train_score']:.2f}, "
                         f"test {result['test_score']:.2f}")
        if run.epoch % cfg.checkpoint_every == 0 and run.epoch < cfg.epochs:
            ctx.checkpointer.save({"algo": to_numpy_tree(algo.state_dict()), "rng": rng.bit_generator.state,
                                   "run": asdict(run)})
    bar.close()
    curve = np.array(run.eval_curve, dtype=np.float64).reshape(-1, 3)
    weights = to_numpy_tree(algo.policy_state_dict())
    require_finite(weights, f"{ctx.stage.name} {ctx.unit.key}")
    with ctx.writer("policy") as w:
        w.tree("weights", weights)
        epochs = np.arange(1, run.epoch + 1, dtype=np.float64)
        w.curve("losses", {"epoch": epochs} | {key: np.array(values) for key, values in run.losses.items()}, "epoch")
        w.curve("eval_curve", {"epochs": curve[:, 0], "train_score": curve[:, 1], "test_score": curve[:, 2]},
                "epochs")
        health = np.array(run.health_curve, dtype=np.float64).reshape(-1, len(HEALTH_CURVE))
        w.curve("health_curve", dict(zip(HEALTH_CURVE, health.T, strict=True)), "epochs")
        w.attrs["method"] = method
        w.json("algo_config", to_dict(algo_cfg))


