"""The experiment config: one YAML file in ``configs/`` = one section per stage.

    name: quickstart
    notes: why these choices (measured)
    env:    envs.config.EnvConfig
    demos:  envs.config.DemoConfig
    policy: policy.configuration.PolicyConfig
    train:  train.config.TrainConfig
    eval:   eval.config.EvalConfig
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from envs.config import DemoConfig, EnvConfig
from eval.config import EvalConfig
from policy.configuration import PolicyConfig
from train.config import TrainConfig
from vla_flow import config as cfgmod


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    notes: str = ""
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemoConfig = field(default_factory=DemoConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    return cfgmod.load(ExperimentConfig, path, overrides)
