"""The artifact writer's completion flag during a write, and what a checkpoint written under another config
does on resume (nothing: the unit starts afresh)."""

import numpy as np
import pytest

from mtrl.artifacts import ArtifactMeta, ArtifactWriter, open_artifact
from mtrl.artifacts.store import COMPLETE_ATTR, fingerprint
from mtrl.errors import ArtifactError
from mtrl.pipeline.base import Checkpointer


def test_completion_flag_is_false_while_the_write_is_open_and_true_after(tmp_path):
    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "distill", {"a": 1})) as w:
        assert bool(w.attrs[COMPLETE_ATTR]) is False  # written first, as false
        w.tree("state", {"x": np.arange(3)})
        assert bool(w.attrs[COMPLETE_ATTR]) is False  # still false after the data went in
        assert not path.exists()  # nothing at the final path until the writer finishes
    with open_artifact(path, "checkpoint") as art:
        assert bool(art.attrs[COMPLETE_ATTR]) is True


def test_a_write_that_raises_leaves_no_artifact(tmp_path):
    path = tmp_path / "a.h5"
    with pytest.raises(RuntimeError), ArtifactWriter(path, ArtifactMeta("eval", "evaluate", {})) as w:
        w.array("x", np.arange(3))
        raise RuntimeError("killed mid-write")
    assert not path.exists()
    with pytest.raises(ArtifactError):
        open_artifact(path)


def _checkpointer(path, config):
    return Checkpointer(path, ArtifactMeta("checkpoint", "distill", config, {"dataset": "abc"}))


def test_checkpoint_of_the_same_config_resumes(tmp_path):
    path = tmp_path / "ckpt.h5"
    _checkpointer(path, {"lr": 1e-3}).save({"epoch": np.int64(4), "w": np.ones(2)})
    state = _checkpointer(path, {"lr": 1e-3}).load()
    assert int(state["epoch"]) == 4 and state["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("other", [{"config": {"lr": 3e-4}}, {"inputs": {"dataset": "xyz"}}])
def test_checkpoint_from_another_config_or_other_inputs_is_ignored(tmp_path, other):
    path = tmp_path / "ckpt.h5"
    _checkpointer(path, {"lr": 1e-3}).save({"epoch": np.int64(4)})
    meta = {"config": {"lr": 1e-3}, "inputs": {"dataset": "abc"}} | other
    assert Checkpointer(path, ArtifactMeta("checkpoint", "distill", meta["config"], meta["inputs"])).load() is None
    assert path.exists()  # ignored, not deleted: the new run overwrites it at its first checkpoint


def test_missing_or_corrupt_checkpoint_starts_afresh(tmp_path):
    path = tmp_path / "ckpt.h5"
    assert _checkpointer(path, {}).load() is None
    path.write_bytes(b"not hdf5")
    assert _checkpointer(path, {}).load() is None


def test_fingerprint_formula_is_stable():
    """Golden values: changing how fingerprints are computed marks every existing run directory stale. If this
    fails on purpose, say so in the release notes."""
    assert fingerprint("distill", 3, {"b": 1, "a": [1, 2.5]}, {"x": "y"}, {"variant": "mbml"}) == "e007acfdcd8d5e96"
    assert fingerprint("distill", 3, {"a": [1, 2.5], "b": 1}, {"x": "y"}, {"variant": "mbml"}) == "e007acfdcd8d5e96"
    assert fingerprint("distill", 3, None, {}) == "e7fb68d2eb62f3df"


def test_provenance_attributes(tmp_path):
    path = tmp_path / "a.h5"
    meta = ArtifactMeta("checkpoint", "distill", {"lr": 1}, {"data": "f0"}, {"variant": "mbml"}, attrs={"wall": 2.0})
    with ArtifactWriter(path, meta) as w:
        w.tree("state", {"x": np.arange(2)})
        w.json("summary", {"score": 1.5})
    with open_artifact(path, "checkpoint") as art:
        assert art.attrs["stage"] == "distill" and art.kind == "checkpoint"
        assert art.meta("config") == {"lr": 1} and art.meta("inputs") == {"data": "f0"}
        assert art.meta("params") == {"variant": "mbml"} and art.meta("summary") == {"score": 1.5}
        assert art.fingerprint == meta.fingerprint and art.seed == -1 and art.attrs["wall"] == 2.0
        assert {"python", "mtrl"} <= set(art.meta("versions"))
        assert art.attrs["created"].endswith("+00:00")  # UTC


@pytest.mark.parametrize("damage, message", [
    ("no complete flag", "incomplete artifact"),
    ("no schema version", "schema version -1 was written by an older mtrl"),
    ("a required dataset missing", "missing state; it is corrupt"),
])
def test_a_damaged_artifact_is_refused_with_a_clear_error(tmp_path, damage, message):
    import h5py

    path = tmp_path / "a.h5"
    with ArtifactWriter(path, ArtifactMeta("checkpoint", "distill", {})) as w:
        w.tree("state", {"x": np.arange(2)})
    with h5py.File(path, "a") as f:
        if damage == "no complete flag":
            del f.attrs[COMPLETE_ATTR]
        elif damage == "no schema version":
            del f.attrs["schema_version"]
        else:
            del f["state"]
    with pytest.raises(ArtifactError, match=message):
        open_artifact(path, "checkpoint")
