"""The `precision` keys: bf16 autocast of the training updates, fingerprinted only when not fp32."""

import shutil

import numpy as np
import pytest
import torch
from smoke import run_stages, smoke_config

from mtrl.artifacts import open_artifact
from mtrl.nn import precision
from mtrl.pipeline.registry import get_stage


def test_bf16_runs_matmuls_in_bfloat16_and_fp32_tf32_on_cpu_do_not():
    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with precision("bf16", "cpu"):
        assert layer(x).dtype == torch.bfloat16
    for name in ("fp32", "tf32"):  # tf32 only changes CUDA matmuls
        with precision(name, "cpu"):
            assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16"):
        with precision("fp16", "cpu"):
            pass


def test_fp32_keeps_the_fingerprints_of_artifacts_made_before_the_key_existed_and_bf16_changes_them():
    config, bf16 = smoke_config(), smoke_config("bcq.precision=bf16")
    stage = get_stage("train-bcq")
    assert "precision" not in stage.stage_config(config)["bcq"]
    assert stage.stage_config(bf16)["bcq"]["precision"] == "bf16"


def weights(path, kind, name):
    with open_artifact(path, kind) as art:
        return art.fingerprint, art.tree(name)


@pytest.mark.parametrize("stage, key, output, kind, tree", [
    ("collect", "collect", "sac/task_00.h5", "sac", "weights"),  # sac-init's SAC runs the same loop
    ("train-bcq", "bcq", "bcq/task_00.h5", "bcq", "weights"),
    ("distill", "distill", "policies/mbml.h5", "policy", "weights"),
    ("train-baseline", "baselines", "policies/batch-pearl.h5", "policy", "weights"),
])
def test_bf16_training_writes_finite_weights_that_differ_from_fp32(smoke_run, tmp_path, stage, key, output, kind,
                                                                    tree):
    _, run_dir = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = smoke_config(f"{key}.precision=bf16", "baselines.algos=[batch-pearl]")
    run_stages(config, run, [stage], tasks=(0,) if stage in ("collect", "train-bcq") else None)
    (fp32_print, fp32), (bf16_print, bf16) = weights(run_dir / output, kind, tree), weights(run / output, kind, tree)
    assert fp32_print != bf16_print
    flat32, flat16 = _leaves(fp32), _leaves(bf16)
    assert flat32.keys() == flat16.keys()
    assert all(np.isfinite(a).all() for a in flat16.values() if np.issubdtype(a.dtype, np.floating))
    assert any(not np.array_equal(flat32[k], flat16[k]) for k in flat32)
    assert all(a.dtype == flat32[k].dtype for k, a in flat16.items())  # the weights themselves stay float32


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in _leaves(sub, f"{prefix}/{name}").items()}
    return {prefix: np.asarray(tree)}
