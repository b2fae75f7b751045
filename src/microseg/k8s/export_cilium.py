"""microseg policy -> cilium manifests (in progress)."""

from __future__ import annotations

from microseg.k8s import export_base


def write(ctx: export_base.Context) -> tuple[list[export_base.Manifest], list[str]]:
    """Not written yet."""
    raise NotImplementedError
