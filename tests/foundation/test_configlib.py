from dataclasses import dataclass, field
from typing import Literal

import pytest

from mtrl.configlib import build, parse_override, read_config_file, read_yaml, select_profile, set_path, to_dict
from mtrl.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = field(default=3e-4, metadata={"min": 0.0, "help": "learning rate"})
    hidden: tuple[int, ...] = (64, 64)
    mode: Literal["best", "final"] = "best"


@dataclass(frozen=True)
class Outer:
    seed: int = field(default=0, metadata={"min": 0})
    n: int | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    deep: Inner = field(default_factory=lambda: Inner(hidden=(256,) * 3))


def test_build_converts_and_keeps_defaults():
    cfg = build(Outer, {"seed": 3, "inner": {"lr": 1, "hidden": [8]}, "n": None})
    assert cfg.seed == 3 and cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.hidden == (8,) and cfg.inner.mode == "best" and cfg.n is None


def test_nested_override_starts_from_the_fields_default_instance():
    cfg = build(Outer, {"deep": {"lr": 0.1}})
    assert cfg.deep.hidden == (256, 256, 256) and cfg.deep.lr == 0.1


@pytest.mark.parametrize("data, message", [
    ({"sed": 1}, "unknown config key 'sed'; valid keys: seed, n, flag, inner, deep"),
    ({"inner": {"lrr": 1}}, "unknown config key 'inner.lrr'; valid keys under 'inner': lr, hidden, mode"),
    ({"seed": -1}, "config key 'seed': -1 is out of range; allowed: >= 0"),
    ({"seed": 1.5}, "config key 'seed': expected an integer"),
    ({"seed": True}, "config key 'seed': expected an integer"),
    ({"flag": "yes"}, "config key 'flag': expected true or false"),
    ({"inner": {"mode": "last"}}, "config key 'inner.mode': 'last' is not one of: best, final"),
    ({"inner": {"hidden": [8, "x"]}}, r"config key 'inner.hidden\[1\]': expected an integer"),
    ({"inner": {"lr": -0.1}}, "config key 'inner.lr': -0.1 is out of range"),
    ({"inner": 3}, "config key 'inner' must be a mapping"),
])
def test_invalid_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, data)


def test_overrides_parse_yaml_values():
    assert parse_override("inner.lr=2.0") == (["inner", "lr"], 2.0)
    assert build(Outer, set_path({}, *parse_override("inner.lr=1e-3"))).inner.lr == 1e-3  # YAML 1.1 reads a str
    assert parse_override("inner.hidden=[1, 2]") == (["inner", "hidden"], [1, 2])
    data = set_path({"inner": {"lr": 1.0}}, ["inner", "mode"], "final")
    assert data == {"inner": {"lr": 1.0, "mode": "final"}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("inner.lr")


def test_profiles_and_safe_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\ninner: {lr: 0.5}\nprofiles:\n  small: {inner: {hidden: [4]}}\n")
    data = read_yaml(path)
    assert select_profile(data, None, "c") == {"seed": 1, "inner": {"lr": 0.5}}
    assert build(Outer, select_profile(data, "small", "c")).inner == Inner(lr=0.5, hidden=(4,))
    with pytest.raises(ConfigError, match="profile 'big' is not defined in c; available profiles: small"):
        select_profile(data, "big", "c")
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(evil)
    assert to_dict(Inner()) == {"lr": 3e-4, "hidden": [64, 64], "mode": "best"}


def test_include_merges_shared_profiles_beneath_the_file(tmp_path):
    from mtrl.configlib import read_config_file

    (tmp_path / "base.yaml").write_text("seed: 1\nprofiles:\n  small: {inner: {hidden: [4], lr: 0.5}}\n")
    (tmp_path / "task.yaml").write_text("include: base.yaml\nflag: true\nprofiles:\n  small: {inner: {lr: 0.25}}\n")
    data = read_config_file(tmp_path / "task.yaml")
    cfg = build(Outer, select_profile(data, "small", "task.yaml"))
    assert cfg.seed == 1 and cfg.flag and cfg.inner.hidden == (4,) and cfg.inner.lr == 0.25
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        read_config_file(tmp_path / "loop.yaml")


def test_a_section_given_as_a_plain_value_is_an_error_not_replaced_by_a_profile(tmp_path):
    """`env: 5` in a file whose profile (or included file) has an `env:` mapping: the merge refuses it."""
    (tmp_path / "base.yaml").write_text("inner: {lr: 0.5}\nprofiles:\n  small: {inner: {lr: 0.25}}\n")
    (tmp_path / "task.yaml").write_text("include: base.yaml\ninner: 5\n")
    with pytest.raises(ConfigError, match="config key 'inner': .*a section must be a mapping everywhere"):
        select_profile(read_config_file(tmp_path / "task.yaml"), "small", "task.yaml")
    (tmp_path / "own.yaml").write_text("inner: 5\nprofiles:\n  small: {inner: {lr: 0.25}}\n")
    with pytest.raises(ConfigError, match=r"'inner': a section \(keys lr\) in one place and the value 5 in another"):
        select_profile(read_config_file(tmp_path / "own.yaml"), "small", "own.yaml")
