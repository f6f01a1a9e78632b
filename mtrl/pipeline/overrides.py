"""Per-unit config overrides: how a method's sweep pick (`mtrl sweep`) becomes the config its policy is trained with.

A unit whose params hold `overrides` ({dotted key: value}) runs with the run's config plus those values
(`Stage.configured`), and its fingerprint covers them. The training stages give a method's unit the overrides its
sweep picked (sweeps/<name>.h5, `mtrl.pipeline.run_data.picked_overrides`), so policies/<name>.h5 is up to date
exactly when it is the picked trial's policy; a sweep's trials are the same unit with their own values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mtrl.configlib import set_path, to_dict

if TYPE_CHECKING:
    from mtrl.config import Config


def with_overrides(config: Config, overrides: dict[str, Any] | None) -> Config:
    """`config` with dotted keys set (validated like `--set`); `config` itself when there are none."""
    if not overrides:
        return config
    from mtrl.config import load_config

    data = to_dict(config)
    for key, value in overrides.items():
        data = set_path(data, key.split("."), value)
    return load_config(None, None, (), base=data)


def config_value(config: Config, dotted: str) -> Any:
    """The value of a dotted key in a resolved config, as plain data."""
    value: Any = to_dict(config)
    for part in dotted.split("."):
        value = value[part]
    return value
