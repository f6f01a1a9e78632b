import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mtrl.artifacts import (
    SCHEMAS,
    ArtifactMeta,
    ArtifactWriter,
    SchemaVersionError,
    describe,
    fingerprint,
    open_artifact,
    read_fingerprint,
)
from mtrl.artifacts.tree import key_name
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
        assert art.fingerprint == fingerprint("evaluate", SCHEMAS["eval"].version, {"a": 1}, {})


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
    with pytest.raises(ArtifactError, match="schema version 99 was written by a newer mtrl"):
        open_artifact(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMAS["eval"].version
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


AWKWARD = {
    "curve": {"steps": np.arange(3.0), "return_mean": np.array([1.0, 2.0, 3.0], np.float32)},
    "optimizer": {"state": {0: {"step": np.array(4.0), "exp_avg": np.ones((2, 3))}, 1: {"step": np.array(4.0)}},
                  "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.999), "params": [0, 1], "amsgrad": False}]},
    "clash": {"0": np.zeros(1), 0: np.ones(1), "0~1": np.full(1, 2.0)},  # str "0" and int 0: same name
    "names": {"a/b": np.zeros(2), "%2F": np.ones(2), "": np.full(2, 2.0), ".": np.full(2, 3.0), "..": np.eye(2),
              "nul\0": np.zeros(3), "tab\tand space é": np.ones(3), "net.0.weight": np.eye(3)},
    "other_keys": {True: np.zeros(1), 1.5: np.ones(1), None: np.full(1, 2.0), -3: np.full(1, 3.0), "true": 7},
    "scalars": [np.float32(1.5), np.int64(-2), np.bool_(True), np.array(2.5), None, True, 3, 2.5, "s", float("nan")],
    "big": 2**100, "empty": {"list": [], "tuple": (), "dict": {}},
    "nested": ((np.arange(2), [np.arange(3), {"k": (np.zeros((0, 4)),)}]),),
    "rng": np.random.default_rng(3).bit_generator.state,
}


def assert_same(a, b):
    """Equal trees with the same types everywhere: containers, keys, scalars, arrays' dtypes and shapes."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b) and [type(k) for k in a] == [type(k) for k in b]
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_tree_round_trip_keeps_awkward_keys_and_types(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "toy", {})) as w:
        w.tree("state", AWKWARD)
    with open_artifact(path, "checkpoint") as art:
        assert_same(art.tree("state"), AWKWARD)


def test_tree_is_stored_under_its_names_for_plain_h5py(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "toy", {})) as w:
        w.tree("state", AWKWARD)
    with h5py.File(path, "r") as f:
        s = f["state"]
        assert np.array_equal(s["curve/return_mean"][()], [1.0, 2.0, 3.0])
        assert s["curve/return_mean"].dtype == np.float32
        assert np.array_equal(s["optimizer/state/0/exp_avg"][()], np.ones((2, 3)))
        assert sorted(s["clash"]) == ["0", "0~1", "0~1~1"]  # "0", then int 0, then the real key "0~1"
        assert np.array_equal(s["clash/0~1"][()], [1.0])  # the int key 0
        assert sorted(s["names"]) == sorted(["a%2Fb", "%252F", "%", "%2E", "..", "nul%00", "tab\tand space é",
                                             "net.0.weight"])
        assert sorted(s["other_keys"]) == ["-3", "1.5", "null", "true"]  # the str key "true" holds no array
        assert s["scalars/0"][()] == np.float32(1.5) and "scalars/4" not in s  # Python scalars: in the attribute
        assert sorted(s["nested/0"]) == ["0", "1"] and s["nested/0/1/1/k/0"].shape == (0, 4)
        assert "empty" not in s and "rng" not in s  # no arrays, no groups
        assert json.loads(s.attrs["tree"])["$d"][0] == [
            "curve", {"$d": [["steps", {"$a": "curve/steps"}], ["return_mean", {"$a": "curve/return_mean"}]]}]


def test_key_names_follow_the_documented_rule():
    assert [key_name(k) for k in ("triplet", "a/b", "50%", "", ".", "..", 0, -1, True, None, 0.5)] == [
        "triplet", "a%2Fb", "50%25", "%", "%2E", "..", "0", "-1", "true", "null", "0.5"]


def test_unstorable_trees_are_refused(tmp_path):
    with ArtifactWriter(tmp_path / "a.h5", ArtifactMeta("checkpoint", "toy", {})) as w:
        with pytest.raises(TypeError, match="dict key of type tuple"):
            w.tree("a", {(1, 2): np.zeros(1)})
        with pytest.raises(TypeError, match="cannot store object"):
            w.tree("b", {"x": object()})


def test_attrs_are_read_only_python_values(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("eval", "evaluate", {"a": 1}, seed=3, attrs={"wall_seconds": 1.5})) as w:
        w.array("returns", np.zeros(2))
        w.attrs["task"] = np.int64(4)
        w.attrs["ok"] = True
        w.attrs["family"] = "point-goal-arc"
        w.json("summary", {"test_score": 1.0})
    with open_artifact(path, "eval") as art:
        attrs = art.attrs
        assert attrs["task"] == 4 and type(attrs["task"]) is int
        assert attrs["ok"] is True and attrs["seed"] == 3 and type(attrs["wall_seconds"]) is float
        assert attrs["family"] == "point-goal-arc" and attrs["kind"] == "eval" and attrs["stage"] == "evaluate"
        assert attrs["schema_version"] == SCHEMAS["eval"].version and attrs["complete"] is True
        assert json.loads(attrs["summary"]) == art.meta("summary") == {"test_score": 1.0}  # JSON: text; meta parses
        assert "task" in attrs and "nope" not in attrs and {"kind", "fingerprint", "config"} <= set(attrs)
        with pytest.raises(KeyError, match="nope"):
            attrs["nope"]
        with pytest.raises(TypeError):
            attrs["task"] = 5


def test_old_schema_version_names_the_stage_to_rerun_and_is_stale(tmp_path):
    from mtrl.pipeline.runner import output_state

    path = tmp_path / "a.h5"
    write_eval(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMAS["eval"].version - 1
    with pytest.raises(SchemaVersionError) as e:
        open_artifact(path, "eval")
    message = str(e.value)
    assert "\n" not in message and isinstance(e.value, ArtifactError)
    assert f"'eval' schema version {SCHEMAS['eval'].version - 1} was written by an older mtrl" in message
    assert "rerun stage 'evaluate'" in message and "--force" in message
    assert output_state(path, "eval", None) == "stale"  # `mtrl status` says stale; `mtrl run` rewrites it


def test_artifacts_record_the_code_version_down_to_the_commit(tmp_path):
    import subprocess

    from mtrl import __version__
    from mtrl.artifacts.store import code_version, package_versions

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert code_version(tmp_path / "nowhere") == __version__  # not a checkout (an installed wheel)
    repo = tmp_path / "repo"
    repo.mkdir()
    git("-C", "repo", "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git("-C", "repo", "add", "a.py")
    git("-C", "repo", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    commit = git("-C", "repo", "rev-parse", "--short=12", "HEAD")
    assert code_version(repo) == f"{__version__}+g{commit}"
    (repo / "a.py").write_text("x = 2\n")
    code_version.cache_clear()
    assert code_version(repo) == f"{__version__}+g{commit}.dirty"
    (repo / "sub").mkdir()
    assert code_version(repo / "sub") == __version__  # inside a checkout is not a checkout of mtrl
    assert package_versions()["mtrl"].startswith(__version__)


@pytest.mark.parametrize("name", ["returns", "weights"])
def test_flipped_bytes_in_stored_numbers_are_a_corruption_error(tmp_path, name):
    """Arrays carry HDF5's Fletcher-32 checksum: a damaged byte fails the read, naming the file and the fix,
    instead of being trained on."""
    path = tmp_path / "a.h5"
    write_eval(path, returns=np.arange(600, dtype=np.float64).reshape(20, 30))
    dataset = "returns" if name == "returns" else "weights/layer/0"
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:  # flip 64 bytes inside the first chunk of the array
        fh.seek(offset + 8)
        data = bytearray(fh.read(64))
        fh.seek(offset + 8)
        fh.write(bytes(b ^ 0xFF for b in data))
    with open_artifact(path, "eval") as art:
        assert art.fingerprint  # attributes are intact: the file opens, status would call it complete
        with pytest.raises(ArtifactError, match=rf"a.h5: '{name}' is corrupt .*rerun stage 'evaluate'"):
            art.array(name) if name == "returns" else art.tree(name)
