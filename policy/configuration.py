"""Placeholder: the stage's owner replaces this with the real config dataclass (same class name)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PolicyConfig:
    pass
