import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mtrl.artifacts import ArtifactMeta, ArtifactWriter, describe, fingerprint, open_artifact, read_fingerprint
from mtrl.errors import ArtifactError


def write_eval(path, config=None, inputs=None, returns=None):
    returns = np.arange(6, dtype=np.float32).reshape(2, 3) if returns is None else returns
    with ArtifactWriter(path, ArtifactMeta("eval", "evaluate", config or {"a": 1}, inputs or {}, seed=3)) as w:
        w.array("returns", returns)
        w.tree("weights", {"layer": {0: np.ones((2, 2)), "b": (np.zeros(3), 5)}, "lr": 3e-4, "name": "x"})
    return returns


def test_round_trip_is_bit_exact_with_attributes(tmp_path):
    path = tmp_path / "a.h5"
    rng = np.random.default_rng(0)
    returns = rng.standard_normal((4, 5)).astype(np.float64)
    write_eval(path, returns=returns)
    with open_artifact(path, "eval") as art:
        assert np.array_equal(art.array("returns"), returns)
        assert art.array("returns").dtype == np.float64
        tree = art.tree("weights")
        assert set(tree["layer"]) == {0, "b"}  # integer keys survive (optimiser states use them)
        assert isinstance(tree["layer"]["b"], tuple) and tree["layer"]["b"][1] == 5
        assert np.array_equal(tree["layer"][0], np.ones((2, 2)))
        assert tree["lr"] == 3e-4 and tree["name"] == "x"
        assert art.seed == 3 and art.meta("config") == {"a": 1}
        assert set(art.meta("versions")) >= {"mujoco", "torch", "gymnasium", "mtrl-batch"}
        assert art.fingerprint == fingerprint("evaluate", 1, {"a": 1}, {})


def test_fingerprint_changes_with_config_or_inputs_only():
    base = fingerprint("collect", 1, {"steps": 10}, {"tasks": "abc"}, {"task": 0})
    assert base == fingerprint("collect", 1, {"steps": 10}, {"tasks": "abc"}, {"task": 0})
    assert base != fingerprint("collect", 1, {"steps": 11}, {"tasks": "abc"}, {"task": 0})
    assert base != fingerprint("collect", 1, {"steps": 10}, {"tasks": "abd"}, {"task": 0})
    assert base != fingerprint("collect", 1, {"steps": 10}, {"tasks": "abc"}, {"task": 1})
    assert base != fingerprint("collect", 2, {"steps": 10}, {"tasks": "abc"}, {"task": 0})


def test_failed_writer_leaves_previous_artifact_intact(tmp_path):
    path = tmp_path / "a.h5"
    first = write_eval(path)
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, ArtifactMeta("eval", "evaluate", {})) as w:
            w.array("returns", np.zeros(3))
            raise RuntimeError("killed")
    with open_artifact(path, "eval") as art:
        assert np.array_equal(art.array("returns"), first)
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]


KILLED_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from mtrl.artifacts import ArtifactMeta, ArtifactWriter
    with ArtifactWriter(sys.argv[1], ArtifactMeta("eval", "evaluate", {})) as w:
        w.array("returns", np.zeros((1000, 100)))
        print("writing", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("previous", [False, True])
def test_sigkill_mid_write_leaves_no_file_or_the_previous_one(tmp_path, previous):
    path = tmp_path / "a.h5"
    if previous:
        first = write_eval(path)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if previous:
        with open_artifact(path, "eval") as art:
            assert np.array_equal(art.array("returns"), first)
    else:
        assert not path.exists()
    # the next writer of that path cleans up the killed writer's temporary file
    write_eval(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        open_artifact(tmp_path / "nope.h5")


def test_not_hdf5_and_truncated(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable HDF5"):
        open_artifact(junk)
    good = tmp_path / "good.h5"
    write_eval(good, returns=np.zeros((2000, 50)))
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        open_artifact(truncated)


def test_incomplete_wrong_kind_and_schema_mismatch(tmp_path):
    path = tmp_path / "a.h5"
    write_eval(path)
    with pytest.raises(ArtifactError, match="is a 'eval' artifact, expected 'dataset'"):
        open_artifact(path, "dataset")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ArtifactError, match="schema version 99"):
        open_artifact(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        f.attrs["complete"] = False
    with pytest.raises(ArtifactError, match="incomplete"):
        read_fingerprint(path)


def test_describe_lists_datasets_with_shapes(tmp_path):
    path = tmp_path / "a.h5"
    write_eval(path)
    info = describe(path)
    assert info["kind"] == "eval" and info["stage"] == "evaluate"
    assert ("returns", (2, 3), "float32") in [(n, tuple(s), d) for n, s, d in info["datasets"]]
    assert json.loads(json.dumps(info, default=list))["fingerprint"] == info["fingerprint"]
