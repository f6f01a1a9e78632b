"""Every training curve is also a CSV file beside its artifact, equal to the curve in the HDF5 file."""

import csv

import h5py
import numpy as np
import pytest

from mtrl.artifacts import open_artifact
from mtrl.artifacts.store import ArtifactMeta, ArtifactWriter


@pytest.mark.parametrize("artifact, curve, x", [
    ("sac/task_00.h5", "curve", "steps"),
    ("bcq/task_01.h5", "curve", "steps"),
    ("policies/mbml.h5", "eval_curve", "epochs"),
    ("policies/mbml.h5", "losses", "epoch"),
    ("policies/batch-pearl.h5", "eval_curve", "epochs"),
    ("sac_init/mbml/task_00.h5", "curves", "steps"),
])
def test_csv_curve_equals_the_hdf5_curve(smoke_run, artifact, curve, x):
    _, run_dir = smoke_run
    path = run_dir / artifact
    with open_artifact(path) as art:
        tree = art.tree(curve)
    with open(path.with_name(f"{path.stem}.{curve}.csv"), newline="") as fh:
        rows = list(csv.reader(fh))
    header, values = rows[0], np.array(rows[1:], dtype=np.float64)
    assert header[0] == x and len(values) == len(tree[x]) > 0
    for i, name in enumerate(header):
        np.testing.assert_array_equal(values[:, i], tree[name])  # repr of a float64 round-trips exactly
    assert set(header) == {k for k, v in tree.items() if k != "episode_returns"}  # the training episodes: HDF5 only


def test_a_failed_writer_leaves_no_csv(tmp_path):
    path = tmp_path / "a.h5"
    with pytest.raises(RuntimeError):
        with ArtifactWriter(path, ArtifactMeta("sac_init", "test")) as w:
            w.curve("curves", {"steps": np.arange(3.0), "return_mean": np.zeros(3)}, "steps")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="columns of different lengths"):
        with ArtifactWriter(path, ArtifactMeta("sac_init", "test")) as w:
            w.curve("curves", {"steps": np.arange(3.0), "return_mean": np.zeros(2)}, "steps")


def test_a_curve_with_no_rows_is_stored_with_its_header(tmp_path):
    """A training too short for its first evaluation (distill epochs < eval_every) has an empty eval curve."""
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("policy", "test")) as w:
        w.curve("eval_curve", {"epochs": np.zeros(0), "test_score": np.zeros(0)}, "epochs")
    with h5py.File(path) as f:
        assert f["eval_curve/epochs"].shape == (0,)
    with open(tmp_path / "a.eval_curve.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["epochs", "test_score"]]
