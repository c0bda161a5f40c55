"""Allowed ranges of numeric settings, and the one message form for a value outside its range.

Shared by config validation and the command lines that take the same numbers; pure checks on
values already typed: no config group, file or flag is known here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Tuple


@dataclass(frozen=True)
class Bound:
    """Finite numbers from `low` (up to `high` when given), optionally also null; open ends are exclusive."""

    low: float
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if value <= self.low if self.low_open else value < self.low:
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            text = f"{'>' if self.low_open else '>='} {self.low}"
        else:
            text = f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        return text + (" or null" if self.nullable else "")


def at_least(low: float, nullable: bool = False) -> Bound:
    return Bound(low=low, nullable=nullable)


def above(low: float, nullable: bool = False) -> Bound:
    return Bound(low=low, low_open=True, nullable=nullable)


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Bound:
    return Bound(low=low, high=high, low_open=low_open, high_open=high_open)


def range_problems(checks: Iterable[Tuple[str, Any, Bound]]) -> list[str]:
    """One message per (name, value, bound) whose value is out of bounds, in the order given."""
    problems = []
    for name, value, bound in checks:
        if bound.admits(value):
            continue
        finite = "finite and " if isinstance(value, float) and not math.isfinite(value) else ""
        problems.append(f"{name} must be {finite}{bound}, got {'null' if value is None else value}")
    return problems
