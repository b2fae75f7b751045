"""What the lab applies to its control plane: its hosts as Workloads, plus its policy files.

Fed by the topology and the policy files; feeds `control.ControlPlane.apply`. The hosts become
Workload documents (name = hostname, the host's address and labels, the lab's mode), loaded
together with the policy through the policy-file loader, so a wrong policy is reported as
file:line: field: message before the lab makes anything, and what is sent is the loader's
canonical dump. `up` also leaves the inventory as `inventory.yaml` in the state directory, for
`microseg explain -f <policy> -f <state dir>/inventory.yaml`. Agents that enroll later adopt these workloads:
enrollment names the workload after the hostname the agent reports, which is the host's name, and
each host's enrollment token is bound to its workload (an unbound token may not adopt one).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from microseg import policyfile
from microseg.lab import topology
from microseg.policyfile import dumper

API_VERSION = "microseg.io/v1"


def workload(host: topology.Host, mode: str) -> dict[str, Any]:
    """One host as a Workload document."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Workload",
        "metadata": {"name": host.name, "labels": dict(host.labels)},
        "spec": {
            "kind": "vm",
            "addresses": [host.address],
            "attributes": {"hostname": host.name, "os": "linux"},
            "mode": mode,
        },
    }


def write(top: topology.Topology, mode: str, path: Path) -> Path:
    """The inventory as a policy file (readable by `microseg explain -f`)."""
    docs = [workload(h, mode) for h in top.hosts]
    header = f"# The lab's hosts as workloads, generated from {top.file} by `microseg lab up`.\n"
    path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def documents(top: topology.Topology, mode: str, policy: list[Path]) -> list[dict[str, Any]]:
    """The inventory and the policy, checked together, as documents for `POST /apply`; a
    PolicyFileError (every problem, file:line: field) when the policy is wrong."""
    with tempfile.TemporaryDirectory(prefix="microseg-lab-") as scratch:
        inventory = write(top, mode, Path(scratch) / "inventory.yaml")
        return dumper.documents(policyfile.load([*policy, inventory]))
