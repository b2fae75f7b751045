"""Conformance cases from ../shared/conformance/netpol as manifests: what upstream test suites
expect NetworkPolicies to allow. The data is never edited; this module only reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "netpol"
"""The project's shared copy (beside the checkout), the one to trust when it is there."""
VENDORED = Path(__file__).resolve().parent / "conformance" / "netpol"
"""A byte-identical copy in the repository, so a clone without the shared folder still runs them."""
CONFORMANCE = SHARED if SHARED.is_dir() else VENDORED


@dataclass(frozen=True)
class Case:
    """One upstream case: the cluster as manifests, the probed ports and the expected verdicts."""

    id: str
    data: dict[str, Any]

    @property
    def expect(self) -> list[dict[str, Any]]:
        return list(self.data["expect"])

    @property
    def complete(self) -> bool:
        """Whether `expect` holds every ordered pair of distinct pods on every probe."""
        return self.data.get("coverage") != "listed"

    def manifests(self) -> str:
        """Namespace, Pod and NetworkPolicy documents, as a user would keep them in one file."""
        docs: list[dict[str, Any]] = []
        for name, ns in self.data["namespaces"].items():
            docs.append(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": ns["labels"]}}
            )
        for pod in self.data["pods"]:
            ports = [
                {
                    k: v
                    for k, v in {
                        "name": p.get("name"),
                        "containerPort": p["port"],
                        "protocol": p.get("protocol"),
                    }.items()
                    if v is not None
                }
                for p in pod["containerPorts"]
            ]
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod["name"], "namespace": pod["namespace"], "labels": pod["labels"]},
                    "spec": {"containers": [{"name": "main", "image": "example", "ports": ports}]},
                    "status": {"phase": "Running", "podIP": pod["ip"], "podIPs": [{"ip": pod["ip"]}]},
                }
            )
        texts = [yaml.safe_dump(d, sort_keys=False) for d in docs] + list(self.data["policies"])
        return "---\n".join(texts)

    def probes(self) -> list[tuple[int, str]]:
        return [(p["port"], p["protocol"]) for p in self.data["ports"]]


def cases() -> list[Case]:
    """Every case, sorted by id."""
    return [Case(path.stem, json.loads(path.read_text())) for path in sorted(CONFORMANCE.glob("*.json"))]
