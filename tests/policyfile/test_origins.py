"""Where an API object of a policy tree was written: what the CLI puts beside a server's 422."""

from __future__ import annotations

import textwrap
from pathlib import Path

from microseg.policyfile import origins

WORKLOADS = textwrap.dedent("""\
    apiVersion: microseg.io/v1
    kind: List
    items:
      - apiVersion: microseg.io/v1
        kind: Workload
        metadata: {name: web-1}
        spec:
          addresses: [10.1.1.1]
          mode: enforce
    """)
POLICY = textwrap.dedent("""\
    apiVersion: microseg.io/v1
    kind: Policy
    metadata: {name: crm}
    spec:
      tier: application
      rules:
        - name: a
          priority: 1
          action: allow
          from: any
          to: any
          services: any
        - name: b
          priority: 2
          action: allow
          from: [{selector: role=web}, {cidr: 10.0.0.0/8}]
          to: any
          services: any
    ---
    apiVersion: microseg.io/v1
    kind: Settings
    spec: {}
    """)


def test_objects_and_their_fields_map_to_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "workloads.yaml").write_text(WORKLOADS)
    (tmp_path / "crm.yaml").write_text(POLICY)
    found = origins.Origins.read([tmp_path])
    crm, wl = tmp_path / "crm.yaml", tmp_path / "workloads.yaml"
    assert found.where("Workload/web-1") == f"{wl}:6"
    assert found.where("Workload/web-1", "spec.mode") == f"{wl}:9"
    assert found.where("Rule/application/b") == f"{crm}:13"
    assert found.where("Rule/application/b", "spec.priority") == f"{crm}:14"
    assert found.where("Rule/application/b", "metadata.name") == f"{crm}:13"
    # what was sent is canonical: an index is not followed (it may be another peer in the file)
    assert found.where("Rule/application/b", "spec.from[1].cidr") == f"{crm}:16"
    assert found.where("Settings/settings", "spec.controlPlane") == f"{crm}:22"
    assert found.where("Rule/security/b") is None and found.where("Service/web") is None
