"""Print docs/datasets.md's table of dataset sizes per family in the `paper` profile: rows per kind and task,
tasks, policy checkpoints collect keeps and their size. Reads the configs only; nothing is run.

    PYTHONPATH=. python scripts/dataset_sizes.py
"""

from pathlib import Path

from mtrl.config import load_config
from mtrl.envs.registry import get_family
from mtrl.pipeline.run_data import n_train_tasks

ROOT = Path(__file__).resolve().parents[1]


def actor_floats(obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> int:
    widths = [obs_dim, *hidden, 2 * act_dim]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def main() -> None:
    print("| config | family | train tasks | rows per kind and task | policy checkpoints per task | "
          "their size per task |")
    print("|---|---|---|---|---|---|")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        config = load_config(path, "paper")
        spec = get_family(config.env.family).spec
        collect = config.collect
        checkpoints = 1 + len(range(collect.eval_every, collect.steps + 1, collect.eval_every)) + (
            collect.steps % collect.eval_every != 0)
        size = checkpoints * actor_floats(spec.obs_dim, spec.act_dim, collect.sac.actor_hidden) * 4 / 2**20
        rows = config.data.transitions or collect.steps
        print(f"| {path.name} | {spec.name} | {n_train_tasks(config)} | {rows:,} | {checkpoints} | {size:.1f} MiB |")


if __name__ == "__main__":
    main()
