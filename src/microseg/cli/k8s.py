"""`microseg k8s ...`: NetworkPolicy reachability of manifests, pods as workloads, export."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
import yaml
from rich.table import Table

from microseg import errors, policyfile
from microseg.cli import loading, output
from microseg.k8s import cluster, export, export_base, importer, live, manifests, reachability
from microseg.model import addresses, estate, services

Manifests = Annotated[
    list[Path] | None,
    typer.Option("-f", "--file", help="manifest file or directory (repeatable; YAML or JSON)"),
]
Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="read a live cluster instead of files (needs microseg[k8s])"),
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context (default: current)")]


class DocFormat(StrEnum):
    """How manifests and workload documents are printed."""

    YAML = "yaml"
    JSON = "json"


def example_inventory() -> Path:
    """The Kubernetes side of the example estate, shipped in the package."""
    return Path(str(resources.files("microseg") / "examples" / "k8s"))


def read_cluster(files: list[Path] | None, kubeconfig: str | None, context: str | None) -> cluster.Cluster:
    """Manifests from files, or a live cluster; exactly one of the two."""
    if kubeconfig is not None or context is not None:
        if files:
            raise errors.UserError("give manifests (-f) or a live cluster (--kubeconfig), not both")
        return live.read_cluster(kubeconfig, context)
    if not files:
        raise errors.UserError("no manifests: give -f FILE_OR_DIR (repeatable) or --kubeconfig")
    return manifests.load(files)


def write_documents(docs: list[dict[str, Any]], fmt: DocFormat, out: Path | None) -> None:
    """Multi-document YAML, or one JSON `List`, to a file or stdout."""
    if fmt is DocFormat.JSON:
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n"
    else:
        text = yaml.safe_dump_all(docs, sort_keys=False, width=100) if docs else ""
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


DETAIL_LIMIT = 400
"""Connections listed one by one in table output; beyond, only the summary (use -o json)."""


PROBE_LIMIT = 1024
"""Ports one `--port` may expand to: every port is a full reachability pass over every pod pair."""


def parse_probes(text: str) -> list[reachability.Probe]:
    """`--port` read by the one port parser every command uses (`80`, `80/TCP`, `tcp/80`,
    `8000-8010/tcp`), expanded port by port; NetworkPolicy ports are TCP, UDP or SCTP numbers."""
    words = set(text.strip().lower().split("/"))
    if words & {p.value for p in services.Protocol if not p.has_ports}:
        raise errors.ValidationError(f"--port {text!r}: protocol must be TCP, UDP or SCTP", "port")
    spec = services.parse_port(text)
    if spec.protocol.value not in ("tcp", "udp", "sctp"):
        raise errors.ValidationError(f"--port {text!r}: protocol must be TCP, UDP or SCTP", "port")
    if not spec.ports:
        raise errors.ValidationError(f"--port {text!r}: name a port or a range, not every port", "port")
    ports = [n for r in spec.ports for n in range(r.first, r.last + 1)]
    if len(ports) > PROBE_LIMIT:
        raise errors.ValidationError(f"--port {text!r}: {len(ports)} ports; at most {PROBE_LIMIT}", "port")
    return [reachability.Probe(n, spec.protocol) for n in ports]


def k8s_reachability(
    files: Manifests = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    ports: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            help="PORT, PORT/PROTO, PROTO/PORT or LOW-HIGH/PROTO (TCP, UDP, SCTP) to probe on every pod "
            "(repeatable); default: each destination's container ports",
        ),
    ] = None,
    fmt: output.Output = output.Format.TABLE,
) -> None:
    """What the manifests' NetworkPolicies allow between every ordered pair of distinct pods."""
    probes = [probe for p in ports for probe in parse_probes(p)] if ports else None
    found = read_cluster(files, kubeconfig, context)
    result = reachability.Reachability(found, probes)
    for note in found.notes:
        output.err_console.print(f"note: {note}")
    if fmt is output.Format.JSON:
        write_json(result)
        return
    print_table(result)


def write_json(result: reachability.Reachability, out: TextIO | None = None) -> None:
    """`{"connections": [...]}`, streamed line by line (the output of a large cluster never sits in
    memory), each connection exactly as `Connection.to_dict` spells it."""
    out = out or sys.stdout
    names = [json.dumps(p.ref) for p in result.pods]
    quoted: dict[str, str] = {}

    def inner(text: str) -> str:  # JSON-escaped, without the quotes: reasons are joined from parts
        found = quoted.get(text)
        if found is None:
            found = quoted[text] = json.dumps(text)[1:-1]
        return found

    fields = {p: f'"port": {p.port}, "protocol": "{p.protocol.value.upper()}"' for p in result.wanted}
    out.write('{"connections": [')
    separator = "\n  "
    for s, d, probe, allowed, ingress, egress in result.rows():
        out.write(
            f'{separator}{{"from": {names[s]}, "to": {names[d]}, {fields[probe]}, '
            f'"allowed": {"true" if allowed else "false"}, "reason": "{inner(ingress)}; {inner(egress)}"}}'
        )
        separator = ",\n  "
    out.write("\n]}\n" if separator != "\n  " else "]}\n")


def print_table(result: reachability.Reachability) -> None:
    """A summary per namespace pair, then each connection when there are few."""
    total, allowed = result.count()
    pods = result.pods
    output.console.print(
        f"{output.plural(len(pods), 'pod')} in "
        f"{output.plural(len({p.namespace for p in pods}), 'namespace')}, "
        f"{output.plural(len(result.index.cluster.policies), 'NetworkPolicy', 'NetworkPolicies')}: "
        f"{allowed} of {output.plural(total, 'connection')} allowed"
    )
    summary: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    open_ports: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s, d, probe, ok in result.verdicts():
        key = (pods[s].namespace, pods[d].namespace)
        summary[key][0] += 1
        if ok:
            summary[key][1] += 1
            open_ports[key].add(str(probe))
    table = Table(title="By namespace pair")
    for column in ("from namespace", "to namespace", "allowed", "blocked", "ports allowed somewhere"):
        table.add_column(column)
    for (src, dst), (count, allowed_here) in sorted(summary.items()):
        ports_here = ", ".join(sorted(open_ports[(src, dst)])) or "-"
        table.add_row(src, dst, str(allowed_here), str(count - allowed_here), ports_here)
    output.console.print(table)
    if total > DETAIL_LIMIT:
        output.console.print(f"{total} connections: too many to list here; use -o json for each one")
        return
    detail = Table(title="Connections")
    for column in ("from", "to", "port", "verdict", "reason"):
        detail.add_column(column)
    for c in result.connections():
        verdict = "[green]allowed[/]" if c.allowed else "[red]blocked[/]"
        detail.add_row(c.source.ref, c.destination.ref, str(c.probe), verdict, c.reason)
    output.console.print(detail)


def k8s_import(
    files: Manifests = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    fmt: Annotated[DocFormat, typer.Option("-o", "--output", help="yaml (policy files) or json")] = (
        DocFormat.YAML
    ),
    out: Annotated[Path | None, typer.Option("--out", help="write to this file instead of stdout")] = None,
) -> None:
    """Pods as microseg workloads (kind pod): their labels, `k8s.namespace`, `k8s.ns.<label>`."""
    imported = importer.import_pods(read_cluster(files, kubeconfig, context))
    for note in imported.notes:
        output.err_console.print(f"note: {note}")
    docs = policyfile.dumper.documents(estate.Estate(workloads=imported.workloads))
    write_documents(docs, fmt, out)


def k8s_export(  # Typer options, all by keyword
    *,
    policy: Annotated[
        list[Path] | None,
        typer.Option("-f", "--file", help="policy file or directory (repeatable)"),
    ] = None,
    example: loading.Example = False,
    inventory: Annotated[
        list[Path] | None,
        typer.Option("--inventory", help="manifests with the pods (repeatable); --example: the examples'"),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    target: Annotated[export.Format, typer.Option("--format", help="what to write")] = (
        export.Format.NETWORKPOLICY
    ),
    port_level: Annotated[
        bool, typer.Option("--port-level", help="accept process/user constraints, enforcing their ports only")
    ] = False,
    skip_icmp: Annotated[
        bool, typer.Option("--skip-icmp", help="leave ICMP out of allow rules (networkpolicy, cilium)")
    ] = False,
    pod_cidrs: Annotated[
        list[str] | None, typer.Option("--pod-cidr", help="the cluster's pod network (repeatable)")
    ] = None,
    namespaces: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            help="isolate pods in this namespace only (repeatable); default: the inventory's but kube-system",
        ),
    ] = None,
    no_dns: Annotated[
        bool, typer.Option("--no-dns", help="do not let pods reach kube-dns on 53 (warned either way)")
    ] = False,
    fmt: Annotated[DocFormat, typer.Option("-o", "--output", help="yaml or json")] = DocFormat.YAML,
    out: Annotated[Path | None, typer.Option("--out", help="write to this file instead of stdout")] = None,
) -> None:
    """microseg policy as NetworkPolicy, Calico or Cilium manifests: exact, or refused naming the rule.
    Pods reach kube-dns on 53 unless --no-dns; kube-system is left alone unless --namespace names it."""
    est = loading.load(policy, example=example)
    if example and inventory is None and kubeconfig is None and context is None:
        inventory = [example_inventory()]
    found = read_cluster(inventory, kubeconfig, context)
    options = export_base.Options(
        port_level=port_level,
        skip_icmp=skip_icmp,
        pod_cidrs=tuple(addresses.network(c) for c in pod_cidrs or ()),
        namespaces=tuple(namespaces or ()),
        dns=not no_dns,
    )
    result = export.export(est, found, target, options)
    for warning in result.warnings:
        output.err_console.print(f"warning: {warning}")
    write_documents(list(result.manifests), fmt, out)
