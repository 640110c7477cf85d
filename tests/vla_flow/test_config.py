"""The typed-config loader: unknown keys, wrong types and missing files are errors that name the fix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

import pytest

from vla_flow import config as cfg
from vla_flow.config import IntList
from vla_flow.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"steps: {self.steps} must be > 0")


@dataclass
class Outer:
    name: str = "x"
    task: Union[int, str] = 0
    limit: Optional[int] = None
    flow_steps: list[int] = field(default_factory=lambda: [1, 10])
    inner: Inner = field(default_factory=Inner)


def test_nested_load_and_roundtrip():
    out = cfg.from_dict(Outer, {"name": "q", "task": "pick", "inner": {"lr": 1, "mode": "b"}})
    assert out.inner.lr == 1.0 and isinstance(out.inner.lr, float)
    assert out.task == "pick" and out.inner.mode == "b"
    assert cfg.from_dict(Outer, cfg.to_dict(out)) == out


def test_unknown_key_suggests_nearest():
    with pytest.raises(cfg.ConfigError, match=r"unknown config key 'inner.lrr'.*Did you mean 'lr'"):
        cfg.from_dict(Outer, {"inner": {"lrr": 0.1}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"steps": "ten"}}, r"inner.steps: expected an integer, got 'ten'"),
        ({"inner": {"steps": True}}, r"inner.steps: expected an integer"),
        ({"inner": {"mode": "c"}}, r"inner.mode: 'c' is not one of \['a', 'b'\]"),
        ({"flow_steps": 5}, r"flow_steps: expected a list"),
        ({"flow_steps": [1, "x"]}, r"flow_steps\[1\]: expected an integer"),
        ({"inner": {"steps": 0}}, r"steps: 0 must be > 0"),
        # Optional[X]: X's own message, not the bare name of typing's wrapper ("matches none of Optional")
        ({"limit": "abc"}, r"^limit: expected an integer, got 'abc' \(or null\)$"),
        ({"task": [1]}, r"^task: \[1\] matches none of Union\[int, str\]$"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.from_dict(Outer, data)


def test_overrides_parse_yaml_scalars_and_create_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: base\ninner:\n  lr: 0.5\n")
    assert cfg.load(Outer, path, ["inner.lr=1e-3"]).inner.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string
    out = cfg.load(Outer, path, ["inner.steps=3", "flow_steps=[1,2,5]", "limit=null", "task=7"])
    assert (out.name, out.inner.lr, out.inner.steps, out.flow_steps, out.limit, out.task) == (
        "base", 0.5, 3, [1, 2, 5], None, 7)
    with pytest.raises(cfg.ConfigError, match="must look like key.sub=value"):
        cfg.load(Outer, path, ["inner.steps"])
    with pytest.raises(cfg.ConfigError, match="unknown config key 'inner.nope'"):
        cfg.load(Outer, path, ["inner.nope=1"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match=r"config file not found: .*nowhere.yaml. Presets in"):
        cfg.load(Outer, tmp_path / "nowhere.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        cfg.load(Outer, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        cfg.load(Outer, lst)


def test_every_preset_in_configs_loads():
    """Every YAML preset shipped in configs/ loads into the experiment config without error."""
    from vla_flow.experiment import load_experiment

    presets = sorted(cfg.CONFIG_DIR.glob("*.yaml"))
    assert presets, f"no presets in {cfg.CONFIG_DIR}"
    for path in presets:
        load_experiment(path)


def test_preset_name_resolves_without_path():
    assert cfg.resolve_config_path("tiny") == cfg.CONFIG_DIR / "tiny.yaml"


@dataclass
class Grid:
    init_states: IntList = field(default_factory=lambda: [0])


def test_int_list_fields_are_parsed_once_by_the_loader():
    """``IntList`` fields read ranges, comma lists, one int or a YAML list into a real list[int], from a file
    and from an override alike; a bad value names its key."""
    from vla_flow.config import ConfigError, apply_overrides, from_dict

    for raw, want in [("0-3,7", [0, 1, 2, 3, 7]), (5, [5]), ([1, "2-3"], [1, 2, 3]), ("1, 2", [1, 2])]:
        got = from_dict(Grid, {"init_states": raw}).init_states
        assert got == want and type(got) is list and all(type(v) is int for v in got)
    assert from_dict(Grid, apply_overrides({}, ["init_states=0-2"])).init_states == [0, 1, 2]
    for bad, msg in [("x", "cannot parse 'x'"), ("3-1", "is empty"), (True, "expected integers"), ("", "empty list")]:
        with pytest.raises(ConfigError, match=f"grid.init_states: .*{msg}"):
            from_dict(Grid, {"init_states": bad}, prefix="grid")
