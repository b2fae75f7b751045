"""Loading an estate for a command: policy files, or the example estate shipped in the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from microseg import policyfile
from microseg.engine import engine
from microseg.model import estate


def examples_dir() -> Path:
    """The example estate shipped inside the package (the `examples/` folder of the repository)."""
    return Path(str(resources.files("microseg") / "examples" / "estate"))


def load(paths: list[Path] | None) -> estate.Estate:
    """Load policy files; the example estate when none are given."""
    return policyfile.load(paths or [examples_dir()])


def build(paths: list[Path] | None) -> engine.PolicyEngine:
    """Load and compile."""
    return engine.PolicyEngine(load(paths))
