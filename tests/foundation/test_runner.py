import h5py
import numpy as np
import pytest
from toy_stages import SummariseToy, ToyConfig, ToySection, TrainToy

from mtrl.artifacts import open_artifact
from mtrl.errors import StageError
from mtrl.pipeline.base import RunOptions
from mtrl.pipeline.runner import plan_unit, run_stage


def outputs(run_dir):
    arrays = {}
    for path in sorted((run_dir / "toy").glob("*.h5")):
        with open_artifact(path) as art:
            arrays[path.name] = (art.array("returns"), art.tree("weights"), art.fingerprint)
    return arrays


def test_skip_when_up_to_date_and_force_recomputes(tmp_path):
    config, options = ToyConfig(), RunOptions(tmp_path)
    assert len(run_stage(TrainToy(), config, options)) == 3
    mtime = (tmp_path / "toy" / "task_00.h5").stat().st_mtime_ns
    assert run_stage(TrainToy(), config, options) == []  # all up to date
    assert (tmp_path / "toy" / "task_00.h5").stat().st_mtime_ns == mtime
    assert len(run_stage(TrainToy(), config, RunOptions(tmp_path, force=True))) == 3
    assert (tmp_path / "toy" / "task_00.h5").stat().st_mtime_ns != mtime


def test_config_change_makes_outputs_stale_and_propagates(tmp_path):
    config = ToyConfig()
    run_stage(TrainToy(), config, RunOptions(tmp_path))
    run_stage(SummariseToy(), config, RunOptions(tmp_path))
    summary = SummariseToy().units(config, tmp_path)[0]
    assert plan_unit(SummariseToy(), config, summary).up_to_date
    changed = ToyConfig(toy=ToySection(steps=21))
    assert not plan_unit(TrainToy(), changed, TrainToy().units(changed, tmp_path)[0]).up_to_date
    assert plan_unit(TrainToy(), ToyConfig(seed=0), TrainToy().units(config, tmp_path)[0]).up_to_date
    assert not plan_unit(TrainToy(), ToyConfig(seed=1), TrainToy().units(config, tmp_path)[0]).up_to_date
    run_stage(TrainToy(), changed, RunOptions(tmp_path))
    assert not plan_unit(SummariseToy(), changed, summary).up_to_date  # an input's fingerprint changed


def test_tasks_selects_units_and_rejects_unknown_ones(tmp_path):
    run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path, tasks=(1,)))
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["task_01.h5"]
    with pytest.raises(StageError, match="--tasks 7: train-toy has tasks 0..2"):
        run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path, tasks=(7,)))


def test_tasks_on_a_stage_that_uses_every_task_is_said_not_ignored_silently(tmp_path):
    run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path))
    run_stage(SummariseToy(), ToyConfig(), RunOptions(tmp_path, tasks=(1,)))
    log = (tmp_path / "logs" / "mtrl.log").read_text()
    assert "summarise-toy: --tasks does not apply (this stage uses every task)" in log


def test_missing_input_names_the_stage_to_run(tmp_path):
    with pytest.raises(StageError, match=r"needs .*task_00.h5, which is missing: run `mtrl train-toy` first"):
        run_stage(SummariseToy(), ToyConfig(), RunOptions(tmp_path))


def test_failing_unit_is_reported_and_others_finish(tmp_path):
    config = ToyConfig(toy=ToySection(fail_task=1))
    with pytest.raises(StageError, match="train-toy: 1 of 3 units failed; task_01: ValueError: diverged"):
        run_stage(TrainToy(), config, RunOptions(tmp_path, workers=2))
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["task_00.h5", "task_02.h5"]
    assert "Traceback" in (tmp_path / "logs" / "mtrl.log").read_text()


def test_two_workers_give_the_same_artifacts_as_one(tmp_path):
    run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path / "one", workers=1))
    run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path / "two", workers=2))
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 3
    for name in one:
        assert np.array_equal(one[name][0], two[name][0])
        for key in one[name][1]:
            assert np.array_equal(one[name][1][key], two[name][1][key])
        assert one[name][2] == two[name][2]


def test_corrupt_input_is_reported(tmp_path):
    run_stage(TrainToy(), ToyConfig(), RunOptions(tmp_path))
    with h5py.File(tmp_path / "toy" / "task_02.h5", "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(StageError, match="cannot read its input: .*task_02.h5: incomplete artifact"):
        run_stage(SummariseToy(), ToyConfig(), RunOptions(tmp_path))


def test_outputs_of_one_unit_must_share_a_schema_version(tmp_path):
    """A unit has one fingerprint, made with one schema version: outputs of kinds with different versions would
    be stale forever (collect's dataset and sac outputs once were), so planning such a unit is refused."""
    from mtrl.artifacts import schema_for
    from mtrl.pipeline.base import Output, Unit

    assert schema_for("eval").version != schema_for("dataset").version
    unit = Unit("all", {"a": Output(tmp_path / "a.h5", "eval"), "b": Output(tmp_path / "b.h5", "dataset")})
    with pytest.raises(RuntimeError, match="must share a schema version"):
        plan_unit(SummariseToy(), ToyConfig(), unit)
