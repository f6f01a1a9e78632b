"""A hostile user's battery: bad options, bad configs, damaged artifacts and failing disks, each against a copy
of a finished smoke run. Every case must end in a clear error: a non-zero exit, one `error: …` line (or click's
usage error) that names the problem, no traceback, and every file that was on disk left as it was, with no
temporary file behind.

    python scripts/bad_input_battery.py            # builds a smoke run in a temporary directory first
    python scripts/bad_input_battery.py RUN_DIR    # a finished smoke run to copy for each case

Prints one line per case that is not clear and the counts; exit status 1 unless every case is clear. CI runs it
through tests/stages/test_bad_input_battery.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "point_goal_arc.yaml"
SMOKE = ["--config", str(CONFIG), "--profile", "smoke"]
FAST = ["--threads", "1"]


@dataclass
class Case:
    """`args` run against a fresh copy of the smoke run (`{run}` in an argument is its path), after `damage`
    altered the copy; the error must mention `names`."""

    name: str
    args: list[str]
    names: str
    damage: Callable[[Path], None] | None = None
    patches: dict[str, Callable] = field(default_factory=dict)  # target -> replacement during the command


# ------------------------------------------------------------------ ways to damage a run directory
def delete(rel: str) -> Callable[[Path], None]:
    return lambda run: (run / rel).unlink()


def truncate(rel: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / rel).read_bytes()
        (run / rel).write_bytes(data[: len(data) // 2])
    return damage


def replace_with_text(rel: str) -> Callable[[Path], None]:
    return lambda run: (run / rel).write_text("not an artifact\n")


def copy_over(source: str, target: str) -> Callable[[Path], None]:
    return lambda run: shutil.copyfile(run / source, run / target)


def set_attr(rel: str, name: str, value) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with h5py.File(run / rel, "a") as f:
            f.attrs[name] = value(f.attrs[name]) if callable(value) else value
    return damage


def drop_key(rel: str, key: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with h5py.File(run / rel, "a") as f:
            del f[key]
    return damage


def set_values(rel: str, key: str, value: float) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with h5py.File(run / rel, "a") as f:
            data = f[key][()]
            data.flat[[3, 7]] = value
            f[key][...] = data
    return damage


def reshape(rel: str, key: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with h5py.File(run / rel, "a") as f:
            data = f[key][()]
            del f[key]
            f[key] = np.concatenate([data, data[:, :1]], axis=1)
    return damage


def flip_bytes(rel: str, key: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with h5py.File(run / rel, "r") as f:
            offset = f[key].id.get_offset() or f[key].id.get_chunk_info(0).byte_offset
        with open(run / rel, "r+b") as fh:
            fh.seek(offset + 16)
            chunk = bytearray(fh.read(64))
            fh.seek(offset + 16)
            fh.write(bytes(b ^ 0xFF for b in chunk))
    return damage


def edit_config(old: str, new: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        text = (run / "config.yaml").read_text()
        assert old in text, old
        (run / "config.yaml").write_text(text.replace(old, new, 1))
    return damage


def write_file(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def os_failure(code: int) -> Callable:
    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))
    return fail


# ------------------------------------------------------------------ the cases
def cases() -> list[Case]:
    run, ds0 = "{run}", "datasets/task_00.h5"
    bad_set = [  # (override, what the error must name)
        ("collect.steps=-5", "collect.steps"), ("collect.steps=many", "collect.steps"),
        ("collect.sac.actor_lr=.nan", "actor_lr"), ("collect.sac.actor_lr=.inf", "actor_lr"),
        ("distill.algo.kl_beta=-.inf", "kl_beta"), ("env=5", "env"), ("env.family=Nope", "Nope"),
        ("nosuch.key=1", "nosuch"), ("distill.algo.nosuch=1", "nosuch"), ("collect.steps", "KEY=VALUE"),
        ("distill.variants=[nope]", "nope"), ("baselines.algos=[nope]", "nope"), ("evaluate.repeats=0", "repeats"),
        ("env.n_train=0", "n_train"), ("bcq.snapshot=bogus", "snapshot"), ("collect.precision=fp8", "precision"),
        ("distill.algo.triplet_sets=bogus", "triplet_sets"), ("distill.algo.hidden_sizes=[1]", "hidden_sizes"),
        ("collect.sac.actor_hidden=[0]", "actor_hidden"), ("distill.algo.z_dim=0", "z_dim"),
        ("seed=-1", "seed"), ("collect.steps.inner=1", "collect.steps"),
    ]
    options = [  # stage options: (args, what the error must name)
        (["collect", "--run-dir", run, *SMOKE, "--workers", "0"], "--workers"),
        (["collect", "--run-dir", run, *SMOKE, "--threads", "0"], "--threads"),
        (["collect", "--run-dir", run, *SMOKE, "--group-size", "0"], "--group-size"),
        (["collect", "--run-dir", run, *SMOKE, "--seed", "-1"], "--seed"),
        (["collect", "--run-dir", run, *SMOKE, "--device", "tpu"], "--device"),
        (["collect", "--run-dir", run, *SMOKE, "--progress-every", "-1"], "--progress-every"),
        (["train-bcq", "--run-dir", run, "--tasks", "abc"], "--tasks"),
        (["train-bcq", "--run-dir", run, "--tasks", "2-0"], "--tasks"),
        (["train-bcq", "--run-dir", run, "--tasks", "99"], "--tasks 99"),
        (["sac-init", "--run-dir", run, "--tasks", "99"], "--tasks 99"),
        (["train-bcq", "--run-dir", run, "--profile", "smoke"], "--config"),
        (["distill", "--run-dir", run, "--variant", "nope"], "--variant"),
        (["distill", "--run-dir", run, "--triplet-margin", "-1"], "triplet_margin"),
        (["distill", "--run-dir", run, "--triplet-margin", "nan"], "triplet_margin"),
        (["distill", "--run-dir", run, "--epochs", "0"], "epochs"),
        (["distill", "--run-dir", run, "--kl-beta", "abc"], "--kl-beta"),
        (["train-baseline", "--run-dir", run, "--algo", "nope"], "--algo"),
        (["evaluate", "--run-dir", run, "--policy", "nope"], "nope"),
        (["relabel", "--run-dir", run, "--relabel", "bogus"], "--relabel"),
        (["run", "--run-dir", run, "--until", "nope"], "--until"),
        (["collect", "--run-dir", run + "/missing", "--config", str(ROOT / "configs" / "nope.yaml")], "nope.yaml"),
        (["collect", "--run-dir", run + "/fresh"], "--config"),
        (["collect", "--run-dir", run + "/relabel.h5", *SMOKE], "relabel.h5"),
        (["collect", "--run-dir", run, "--config", str(ROOT / "configs")], "configs"),
        (["train-bcq"], "--run-dir"), (["nosuchcommand"], "nosuchcommand"),
        (["sweep", "--run-dir", run, "--method", "nope", "--grid", "distill.algo.kl_beta=0.1"], "--method"),
        (["sweep", "--run-dir", run, "--method", "mbml"], "--grid"),
        (["sweep", "--run-dir", run, "--method", "mbml", "--grid", "kl_beta"], "--grid"),
        (["sweep", "--run-dir", run, "--method", "mbml", "--grid", "distill.algo.nosuch=1"], "nosuch"),
        (["sweep", "--run-dir", run, "--method", "mbml", "--grid", "distill.algo.kl_beta=-1,0.1"], "kl_beta"),
        (["sweep", "--run-dir", run, "--method", "mbml", "--grid", "evaluate.repeats=1,2"], "evaluate.repeats"),
        (["sweep", "--run-dir", run, "--method", "no-triplet", "--grid", "distill.algo.triplet_margin=1,2"],
         "triplet_margin"),
    ]
    tools = [
        (["status", run + "/missing"], "missing"), (["status", run + "/datasets"], "config.yaml"),
        (["verify", run + "/missing"], "missing"),
        (["report", run + "/missing"], "missing"), (["report", run, run], "twice"),
        (["plot", run, "--curve", "policies/nope.losses"], "nope"),
        (["plot", run, "--curve", "policies/mbml.losses", "--y", "nope"], "nope"),
        (["inspect", run + "/nope.h5"], "nope.h5"), (["inspect", run + "/config.yaml"], "config.yaml"),
        (["export-dataset", run, "--task", "99"], "99"), (["export-dataset", run, "--task", "0", "--format", "x"],
                                                            "--format"),
        (["config", "--profile", "smoke"], "--config"), (["config", "--config", str(CONFIG), "--profile", "nope"],
                                                         "nope"),
    ]
    damaged = [  # (name, damage, command, what the error must name)
        ("dataset deleted", delete(ds0), ["train-bcq", "--tasks", "0"], ds0),
        ("dataset truncated", truncate(ds0), ["train-bcq", "--tasks", "0"], ds0),
        ("dataset is text", replace_with_text(ds0), ["train-bcq", "--tasks", "0"], ds0),
        ("dataset incomplete", set_attr(ds0, "complete", False), ["train-bcq", "--tasks", "0"], ds0),
        ("dataset of another kind", copy_over("bcq/task_00.h5", ds0), ["train-bcq", "--tasks", "0"], ds0),
        ("dataset of a newer schema", set_attr(ds0, "schema_version", lambda v: v + 1), ["train-bcq", "--tasks", "0"],
         ds0),
        ("dataset without rewards", drop_key(ds0, "rewards"), ["fit-rewards", "--tasks", "0"], "rewards"),
        ("NaN rewards", set_values(ds0, "rewards", np.nan), ["fit-rewards", "--tasks", "0", "--force"], "rewards"),
        ("inf observations", set_values(ds0, "observations", np.inf), ["train-bcq", "--tasks", "0", "--force"],
         "observations"),
        ("NaN actions", set_values(ds0, "actions", np.nan), ["train-bcq", "--tasks", "0", "--force"], "actions"),
        ("flipped bytes", flip_bytes(ds0, "observations"), ["train-bcq", "--tasks", "0", "--force"], ds0),
        ("actions of the wrong width", reshape(ds0, "actions"), ["train-bcq", "--tasks", "0", "--force"], "actions"),
        ("tasks.h5 deleted", delete("tasks.h5"), ["train-bcq"], "tasks.h5"),
        ("tasks.h5 truncated", truncate("tasks.h5"), ["distill"], "tasks.h5"),
        ("bcq deleted", delete("bcq/task_00.h5"), ["distill"], "bcq/task_00.h5"),
        ("bcq is text", replace_with_text("bcq/task_01.h5"), ["distill"], "bcq/task_01.h5"),
        ("bcq incomplete", set_attr("bcq/task_02.h5", "complete", False), ["distill", "--force"], "bcq/task_02.h5"),
        ("rewards deleted", delete("rewards/task_00.h5"), ["relabel"], "rewards/task_00.h5"),
        ("rewards truncated", truncate("rewards/task_01.h5"), ["relabel"], "rewards/task_01.h5"),
        ("relabel deleted", delete("relabel.h5"), ["distill", "--variant", "mbml"], "relabel.h5"),
        ("relabel truncated", truncate("relabel.h5"), ["distill", "--variant", "mbml"], "relabel.h5"),
        ("policy deleted", delete("policies/mbml.h5"), ["evaluate", "--policy", "mbml"], "policies/mbml.h5"),
        ("policy truncated", truncate("policies/mbml.h5"), ["evaluate", "--policy", "mbml"], "policies/mbml.h5"),
        ("policy deleted (sac-init)", delete("policies/mbml.h5"), ["sac-init"], "policies/mbml.h5"),
        ("sac weights deleted", delete("sac/task_00.h5"), ["evaluate", "--policy", "sac"], "sac/task_00.h5"),
        ("config.yaml not YAML", write_file("config.yaml", "env: [unclosed\n"), ["train-bcq"], "config.yaml"),
        ("config.yaml empty", write_file("config.yaml", ""), ["train-bcq"], "config.yaml"),
        ("config.yaml a list", write_file("config.yaml", "- 1\n- 2\n"), ["train-bcq"], "config.yaml"),
        ("config.yaml unknown key", edit_config("seed:", "nosuch: 1\nseed:"), ["train-bcq"], "nosuch"),
        ("config.yaml bad value", edit_config("triplet_margin: 2.0", "triplet_margin: -3.0"), ["distill"],
         "triplet_margin"),
        ("config.yaml binary", write_file("config.yaml", b"\x00\xff\xfe"), ["train-bcq"], "config.yaml"),
        ("export of a corrupt dataset", truncate(ds0), ["export-dataset", "{run}", "--task", "0"], ds0),
        ("inspect a truncated artifact", truncate(ds0), ["inspect", "{run}/" + ds0], ds0),
        ("report --out on a file", None, ["report", "{run}", "--out", "{run}/relabel.h5"], "relabel.h5"),
    ]
    configs = [  # bad experiment files given with --config: (file text, what the error must name)
        ("env: [unclosed\n", "yaml"), ("- a list\n", "mapping"), ("include: nope.yaml\n", "nope.yaml"),
        (f"include: {CONFIG}\nenv: 5\n", "env"), (f"include: {CONFIG}\nnosuch: {{a: 1}}\n", "nosuch"),
        (f"include: {CONFIG}\ndistill: {{algo: {{kl_beta: .nan}}}}\n", "kl_beta"),
        (f"include: {CONFIG}\nprofiles: 3\n", "profiles"), (b"\xff\xfe\x00", "bad.yaml"),
    ]
    disks = [  # the disk fails under a stage: (name, patch target, errno, command, what the error must name)
        ("full disk while writing an artifact", "mtrl.artifacts.store.os.fsync", errno.ENOSPC,
         ["train-bcq", "--tasks", "0", "--force"], "no space left"),
        ("quota exceeded", "mtrl.artifacts.store.os.fsync", errno.EDQUOT, ["distill", "--variant", "neither",
                                                                         "--force"], "quota"),
        ("permission denied on rename", "mtrl.fsio.os.replace", errno.EACCES, ["fit-rewards", "--tasks", "1",
                                                                              "--force"], "permission denied"),
        ("read-only file system on rename", "mtrl.fsio.os.replace", errno.EROFS, ["relabel", "--force"],
         "read-only"),
        ("full disk while saving the config", "mtrl.fsio.os.replace", errno.ENOSPC,
         ["train-bcq", "--set", "bcq.steps=7"], "config.yaml"),
        ("full disk while writing the report", "mtrl.fsio.os.replace", errno.ENOSPC, ["report", "{run}"],
         "results.md"),
    ]
    battery = [Case(f"--set {o}", ["train-bcq", "--run-dir", run, "--set", o], n) for o, n in bad_set]
    battery += [Case(" ".join(a[:1] + a[3:] if "--run-dir" in a[:3] else a), a, n) for a, n in options]
    battery += [Case(" ".join(a), a, n) for a, n in tools]
    battery += [Case(n, a if "{run}" in " ".join(a) else [*a, "--run-dir", run, *FAST], names, damage=d)
                for n, d, a, names in damaged]
    battery += [Case(f"--config file: {n}", ["collect", "--run-dir", run, "--config", run + "/bad.yaml", "--profile",
                                              "smoke"], n, damage=write_file("bad.yaml", t)) for t, n in configs]
    battery += [Case(n, a if "{run}" in a else [*a, "--run-dir", run, *FAST], names, patches={target: os_failure(code)})
                for n, target, code, a, names in disks]
    return battery


# ------------------------------------------------------------------ running them
def snapshot(directory: Path) -> dict[str, str]:
    """Every file but the logs and locks (a failing command may log), with a hash of its content."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not {"logs", ".locks"} & set(p.relative_to(directory).parts)}


@dataclass
class Outcome:
    case: Case
    verdict: str  # clear | unclear | traceback | damaged
    detail: str = ""


def run_case(case: Case, base: Path, scratch: Path) -> Outcome:
    from mtrl.cli import main

    run = scratch / "run"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(base, run)
    if case.damage:
        case.damage(run)
    before = snapshot(run)
    args = [a.replace("{run}", str(run)) for a in case.args]
    with contextlib.ExitStack() as stack:
        for target, replacement in case.patches.items():
            stack.enter_context(mock.patch(target, replacement))
        result = CliRunner().invoke(main, args)
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit) or "Traceback" in output:
        return Outcome(case, "traceback", f"{type(result.exception).__name__}: {result.exception}")
    after = snapshot(run)
    changed = sorted(k for k in before if after.get(k) != before[k])
    leftovers = sorted(k for k in after if ".tmp-" in k)
    if changed or leftovers:
        return Outcome(case, "damaged", f"changed {changed[:3]}, temporary {leftovers[:3]}")
    errors = [line for line in output.splitlines() if line.startswith(("error: ", "Error: "))]
    if result.exit_code == 0 or len(errors) != 1:
        return Outcome(case, "unclear", f"exit {result.exit_code}: {output.strip()[-300:]!r}")
    if case.names.lower() not in errors[0].lower().replace(str(run).lower() + "/", ""):
        return Outcome(case, "unclear", f"does not name {case.names!r}: {errors[0][:300]}")
    return Outcome(case, "clear", errors[0])


def run_battery(base: Path, scratch: Path, report: Callable[[str], None] = print) -> dict[str, int]:
    """Run every case against copies of `base`; report the cases that are not clear, return the counts."""
    counts = {"clear": 0, "unclear": 0, "traceback": 0, "damaged": 0}
    for case in cases():
        outcome = run_case(case, base, scratch)
        counts[outcome.verdict] += 1
        if outcome.verdict != "clear":
            report(f"{outcome.verdict}: {case.name}: {outcome.detail}")
    total = sum(counts.values())
    report(f"{total} cases: {counts['clear']} clear errors, {counts['unclear']} unclear, {counts['traceback']} "
           f"tracebacks, {counts['damaged']} damaged")
    return counts


@contextlib.contextmanager
def smoke_run() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        from mtrl.cli import main

        run = Path(tmp) / "smoke"
        result = CliRunner().invoke(main, ["run", "--run-dir", str(run), *SMOKE, *FAST])
        assert result.exit_code == 0, result.output
        yield run


def main(argv: list[str]) -> int:
    given = contextlib.nullcontext(Path(argv[0])) if argv else None
    with tempfile.TemporaryDirectory() as scratch, given or smoke_run() as base:
        counts = run_battery(base, Path(scratch))
    return 0 if counts["clear"] == sum(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
