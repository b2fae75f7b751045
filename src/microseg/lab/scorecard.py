"""The demo's score: each step's checks, facts and time, and how a step tells its watcher.

Written by the steps (`story`) through a `StepLog`, read by the CLI (tables for people, `-o json`
for scripts). Pure bookkeeping: nothing here touches the lab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Table:
    """Rows for people; the reporter draws them."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_json(self) -> list[dict[str, str]]:
        """One object per row, keyed by header."""
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Check:
    """One thing a step claims, and whether the lab agreed."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class StepResult:
    """A finished step: its checks, what it showed, and how long it took."""

    number: int
    title: str
    checks: list[Check] = field(default_factory=list)
    shown: list[str | Table] = field(default_factory=list)
    """Lines and tables for people, in the order the step found them."""
    summary: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every check held (a step without checks did not run)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The scorecard entry."""
        return {
            "step": self.number,
            "title": self.title,
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "summary": self.summary,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "lines": [item for item in self.shown if isinstance(item, str)],
            "tables": [item.to_json() for item in self.shown if isinstance(item, Table)],
        }


class Reporter(Protocol):
    """What a person watching the demo is told."""

    def on_step_started(self, number: int, title: str) -> None:
        """A step begins."""

    def on_step_progress(self, text: str) -> None:
        """What the running step is doing or waiting for now."""

    def on_step_done(self, result: StepResult) -> None:
        """A step ended (passed or not)."""


class StepLog:
    """What a running step records: checks, lines, tables, its one-line summary."""

    def __init__(self, result: StepResult, reporter: Reporter) -> None:
        self.result, self.reporter = result, reporter

    def progress(self, text: str) -> None:
        """Tell the watcher what is happening now."""
        self.reporter.on_step_progress(text)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a claim and whether it held; `ok`."""
        self.result.checks.append(Check(name, ok, detail))
        return ok

    def line(self, text: str) -> None:
        """A fact to show after the step."""
        self.result.shown.append(text)

    def table(self, headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
        """A table to show after the step."""
        self.result.shown.append(Table(headers, tuple(rows)))

    def summary(self, text: str) -> None:
        """The step's line in the scorecard."""
        self.result.summary = text


Step = tuple[str, Callable[[StepLog], None]]


@dataclass
class Scorecard:
    """The whole run."""

    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: str = ""
    kept: bool = False
    server: str = ""
    token: str = ""
    """Only when the lab was kept (the console needs it); never printed otherwise."""

    @property
    def ok(self) -> bool:
        """Every step passed."""
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """`microseg demo -o json`."""
        kept = {"server": self.server, "console": self.server + "/", "token": self.token} if self.kept else {}
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "outDir": self.out_dir,
            "kept": self.kept,
            **kept,
            "steps": [s.to_json() for s in self.steps],
        }
