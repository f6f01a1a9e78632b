"""The artifact store's smaller promises, each pinned by a unit test (the mutants mutmut left alive in
`mtrl/artifacts/store.py`, docs/mutation.md): curve files and sinks, clean-up of killed writers' temporaries,
row chunks of compressed arrays, canonical provenance text, `describe`, and the one-line errors."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mtrl.artifacts import ArtifactMeta, ArtifactWriter, describe, open_artifact, read_fingerprint, store
from mtrl.errors import ArtifactError


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def dead_pid() -> int:
    """The pid of a process that has exited (a killed writer's)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_curve_csv_has_x_first_then_the_other_columns_in_order_and_not_the_extra_ones(tmp_path):
    path = tmp_path / "task_00.h5"
    columns = {"return_mean": np.array([1.5, -2.0]), "steps": np.array([10, 20]), "q": np.array([0.25, 0.5])}
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "test")) as w:
        w.tree("state", {"x": np.zeros(1)})
        w.curve("eval/curve", columns, "steps", also={"episode_returns": np.ones((2, 3))})
    rows = read_csv(tmp_path / "task_00.eval.curve.csv")  # `/` in a curve name becomes `.` in the file name
    assert rows == [["steps", "return_mean", "q"], ["10.0", "1.5", "0.25"], ["20.0", "-2.0", "0.5"]]
    with open_artifact(path) as art:  # the HDF5 tree keeps every column, the extra ones too
        tree = art.tree("eval/curve")
    assert set(tree) == {"return_mean", "steps", "q", "episode_returns"}
    np.testing.assert_array_equal(tree["episode_returns"], np.ones((2, 3)))


@pytest.mark.parametrize("y", [np.zeros((3, 1)), np.zeros(2)], ids=["not one column", "shorter"])
def test_a_curve_column_of_another_shape_is_refused(y):
    with pytest.raises(ValueError, match="different lengths"), ArtifactWriter(
            Path("/nonexistent/a.h5"), ArtifactMeta("policy", "test")) as w:
        w.curve("c", {"x": np.arange(3.0), "y": y}, "x")


def test_curve_tables_are_float64_even_for_integer_columns(tmp_path):
    tables = []
    with ArtifactWriter(tmp_path / "a.h5", ArtifactMeta("eval", "test"),
                        curve_sinks=[lambda path, curves: tables.append(curves["c"])]) as w:
        w.array("returns", np.zeros(1))
        w.curve("c", {"steps": np.array([1, 2]), "count": np.array([3, 4])}, "steps")
    assert tables[0][1].dtype == np.float64
    assert read_csv(tmp_path / "a.c.csv") == [["steps", "count"], ["1.0", "3.0"], ["2.0", "4.0"]]


def test_extra_curve_sinks_get_the_final_path_and_every_curve_before_the_rename(tmp_path):
    path = tmp_path / "a.h5"
    calls = []

    def sink(artifact_path, curves):
        calls.append((artifact_path, {k: (h, r.copy()) for k, (h, r) in curves.items()}, artifact_path.exists(),
                      store.csv_path(artifact_path, "c1").exists()))

    with ArtifactWriter(path, ArtifactMeta("policy", "test"), curve_sinks=[sink]) as w:
        w.curve("c1", {"x": np.arange(2.0), "y": np.array([3.0, 4.0])}, "x")
        w.curve("c2", {"t": np.zeros(1)}, "t")
    [(seen_path, curves, artifact_existed, csv_existed)] = calls
    assert seen_path == path and not artifact_existed and csv_existed  # the CSV sink runs first, the rename last
    assert curves["c1"][0] == ["x", "y"] and np.array_equal(curves["c1"][1], [[0.0, 3.0], [1.0, 4.0]])
    assert curves["c2"][0] == ["t"] and curves["c2"][1].shape == (1, 1)


def test_no_sink_is_called_without_curves_or_after_a_failed_write(tmp_path):
    calls = []
    with ArtifactWriter(tmp_path / "a.h5", ArtifactMeta("eval", "test"), curve_sinks=[lambda *a: calls.append(a)]) as w:
        w.array("returns", np.zeros(2))
    with pytest.raises(RuntimeError), ArtifactWriter(tmp_path / "b.h5", ArtifactMeta("eval", "test"),
                                                     curve_sinks=[lambda *a: calls.append(a)]) as w:
        w.curve("c", {"x": np.arange(2.0)}, "x")
        raise RuntimeError("killed")
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]


def test_the_next_writer_removes_only_the_temporaries_of_dead_writers_of_its_own_path(tmp_path):
    # a live writer of our own: a buggy clean-up that signals it must not hit a process that matters
    live_writer = subprocess.Popen(["sleep", "60"])
    dead, alive = dead_pid(), live_writer.pid
    names = {
        f".no-triplet.h5.tmp-{dead}": False,  # a killed writer of no-triplet.h5: removed
        f".no-triplet.h5.tmp-{alive}": True,  # the pid is what follows the last `-`, whatever the name holds
        f".a.h5.tmp-{dead}": False,  # a killed writer of a.h5: removed
        f".a.curve.csv.tmp-{dead}": False,  # its curve file: removed
        ".a.h5.tmp-garbage": False,  # not a pid: removed
        f".a.h5.tmp-{alive}": True,  # a writer still running: kept
        f".b.h5.tmp-{dead}": True,  # another artifact's: kept
    }
    for name in names:
        (tmp_path / name).write_text("partial")
    for name in ("a.h5", "no-triplet.h5"):
        with ArtifactWriter(tmp_path / name, ArtifactMeta("eval", "test")) as w:
            w.array("returns", np.zeros(2))
    still_running = live_writer.poll() is None
    live_writer.kill()
    live_writer.wait()
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"a.h5", "no-triplet.h5"} | {name for name, kept in names.items() if kept}
    assert still_running  # checked with signal 0, not sent a real one


@pytest.mark.parametrize("shape, chunks", [((100_000, 4), (16_384, 4)), ((10, 3), (10, 3)), ((70_000,), (65_536,)),
                                           ((5, 100_000), (1, 100_000)), ((0, 3), None)])
def test_compressed_arrays_are_chunked_by_rows_of_about_64k_values(tmp_path, shape, chunks):
    path = tmp_path / "a.h5"
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    with ArtifactWriter(path, ArtifactMeta("eval", "test")) as w:
        w.array("returns", data, compression="gzip")
    with h5py.File(path) as f:
        if chunks is not None:  # an empty array: stored, laid out as h5py chooses
            assert f["returns"].chunks == chunks and f["returns"].compression == "gzip"
        np.testing.assert_array_equal(f["returns"][()], data)


def test_provenance_text_is_canonical_so_equal_configs_write_equal_attributes(tmp_path):
    texts = []
    for i, config in enumerate([{"b": 1, "a": {"y": 2, "x": 3}}, {"a": {"x": 3, "y": 2}, "b": 1}]):
        meta = ArtifactMeta("eval", "test", config, {"t2": "f", "t1": "g"}, {"q": 1, "p": 2})
        with ArtifactWriter(tmp_path / f"{i}.h5", meta) as w:
            w.array("returns", np.zeros(1))
            w.json("summary", {"z": 1, "a": 2})
        with h5py.File(tmp_path / f"{i}.h5") as f:
            texts.append([f.attrs[k] for k in ("config", "inputs", "params", "summary")])
    assert texts[0] == texts[1] == [json.dumps(v, sort_keys=True) for v in (
        {"a": {"x": 3, "y": 2}, "b": 1}, {"t1": "g", "t2": "f"}, {"p": 2, "q": 1}, {"a": 2, "z": 1})]
    with h5py.File(tmp_path / "0.h5") as f:  # the versions record is canonical too
        versions = f.attrs["versions"]
    assert versions == json.dumps(json.loads(versions), sort_keys=True)


def test_a_config_value_json_cannot_encode_is_fingerprinted_by_its_text():
    assert store.fingerprint("s", 1, {"dir": Path("/a/b")}, {}) == store.fingerprint("s", 1, {"dir": "/a/b"}, {})


def test_package_versions_name_every_versioned_package_and_say_which_are_missing(monkeypatch):
    monkeypatch.setattr(store, "VERSIONED_PACKAGES", (*store.VERSIONED_PACKAGES, "no-such-package-mtrl"))
    versions = store.package_versions()
    assert set(versions) == {"python", "mtrl", *store.VERSIONED_PACKAGES}
    assert versions["no-such-package-mtrl"] == "not installed" and versions["numpy"] == np.__version__


def test_the_code_version_recorded_is_that_of_the_source_tree_holding_mtrl():
    import mtrl

    assert store.package_versions()["mtrl"] == store.code_version(Path(mtrl.__file__).resolve().parents[1])


def test_two_writers_of_one_path_may_be_open_at_once_and_the_last_to_finish_wins(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("eval", "test", {"n": 1})) as outer:
        outer.array("returns", np.ones(1))
        with ArtifactWriter(path, ArtifactMeta("eval", "test", {"n": 2})) as inner:
            inner.array("returns", np.full(1, 2.0))
    with open_artifact(path) as art:
        assert art.meta("config") == {"n": 1} and art.array("returns")[0] == 1.0


def test_describe_reports_the_provenance_and_every_dataset(tmp_path):
    path = tmp_path / "a.h5"
    meta = ArtifactMeta("eval", "evaluate", {"lr": 1}, {"data": "f0"}, {"task": 2}, seed=7)
    with ArtifactWriter(path, meta) as w:
        w.array("returns", np.zeros((2, 3), np.float32))
        w.tree("nested", {"w": np.ones(4, np.int64)})
    info = describe(path)
    assert info["path"] == str(path) and info["kind"] == "eval" and info["stage"] == "evaluate"
    assert info["schema_version"] == store.schema_for("eval").version and info["seed"] == 7
    assert info["fingerprint"] == meta.fingerprint and info["created"].endswith("+00:00")
    assert info["config"] == {"lr": 1} and info["inputs"] == {"data": "f0"} and info["params"] == {"task": 2}
    assert info["versions"]["mtrl"] and info["size_bytes"] == path.stat().st_size
    assert sorted((n, tuple(s), d) for n, s, d in info["datasets"]) == [("nested/w", (4,), "int64"),
                                                                        ("returns", (2, 3), "float32")]


def test_read_fingerprint_checks_the_kind(tmp_path):
    path = tmp_path / "a.h5"
    meta = ArtifactMeta("eval", "evaluate", {"a": 1})
    with ArtifactWriter(path, meta) as w:
        w.array("returns", np.zeros(1))
    assert read_fingerprint(path) == read_fingerprint(path, "eval") == meta.fingerprint
    with pytest.raises(ArtifactError, match="expected 'dataset'"):
        read_fingerprint(path, "dataset")


def test_an_hdf5_file_that_is_no_artifact_and_a_missing_entry_are_one_line_errors(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(2)
    with pytest.raises(ArtifactError, match=r"plain.h5: not an mtrl artifact \(no 'kind' attribute\)$"):
        open_artifact(plain)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ArtifactError, match=r"junk.h5: not a readable HDF5 file; if it is an mtrl artifact it is "
                                            r"corrupt or truncated: delete it and rerun the stage that wrote it$"):
        open_artifact(junk)
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("eval", "evaluate")) as w:
        w.array("returns", np.zeros(1))
    with open_artifact(path) as art:
        for read in (art.array, art.tree):
            with pytest.raises(ArtifactError, match=r"a.h5: has no 'nope'; it is corrupt — rerun its stage with"):
                read("nope")
        assert "returns" in art and "nope" not in art


def test_attributes_decode_bytes_and_keep_arrays(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("eval", "evaluate")) as w:
        w.array("returns", np.zeros(1))
        w.attrs["raw"] = np.bytes_(b"text")
        w.attrs["vector"] = np.array([1.0, 2.0])
    with open_artifact(path) as art:
        attrs = art.attrs
        assert attrs["raw"] == "text" and isinstance(attrs["raw"], str)
        assert isinstance(attrs["vector"], np.ndarray) and attrs["vector"].tolist() == [1.0, 2.0]
        assert len(attrs) == len(list(attrs)) == len(art.file.attrs)


def test_schema_and_missing_dataset_errors_name_the_fix_in_full(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "distill")) as w:
        w.tree("state", {"x": np.arange(2)})
    version = store.schema_for("checkpoint").version
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = version + 1
        del f.attrs["stage"]
    with pytest.raises(ArtifactError) as error:
        open_artifact(path)
    assert str(error.value).endswith(
        f"'checkpoint' schema version {version + 1} was written by a newer mtrl (this one reads version {version}); "
        "rerun stage '?' to rewrite it (`mtrl run`, or the stage's own command with --force)")
    tasks = tmp_path / "tasks.h5"  # a kind with two required datasets, both absent: both named
    with ArtifactWriter(tasks, ArtifactMeta("tasks", "tasks")):
        pass
    with pytest.raises(ArtifactError, match=r"tasks.h5: missing train_tasks, test_tasks; it is corrupt — rerun its "
                                            r"stage with --force$"):
        open_artifact(tasks)
