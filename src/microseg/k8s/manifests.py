"""Kubernetes manifests (files, directories, texts) -> one `cluster.Cluster`, or every problem.

The flow:

    files --policyfile.loader.read--> YAML/JSON documents (line of every field)
          --_objects----------------> (kind, reader, data) per object; `kind: List` and *List expanded
          --pods / policies---------> Namespace, Pod, template pods, NetworkPolicy values
          --_assemble---------------> Cluster (template pods only when there are no Pod objects)

Multi-document YAML and JSON are both read (JSON is YAML). Kinds that do not change reachability
(Service, ConfigMap, ...) are skipped; other policy kinds (Cilium, Calico, AdminNetworkPolicy) are
skipped with a note, because the analysis covers `networking.k8s.io/v1` NetworkPolicy only. Every
problem names its file and line, the document (its number in the file, kind and name) and the field.

What it deliberately does not do: decide anything about traffic.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microseg import errors
from microseg.k8s import cluster, netpol, pods, policies
from microseg.policyfile import loader, nodes
from microseg.policyfile.reader import Reader, describe

SUFFIXES = (".yaml", ".yml", ".json")
OTHER_POLICY_KINDS = frozenset(
    {
        "CiliumNetworkPolicy",
        "CiliumClusterwideNetworkPolicy",
        "GlobalNetworkPolicy",
        "AdminNetworkPolicy",
        "BaselineAdminNetworkPolicy",
        "ClusterNetworkPolicy",
        "ClusterNetworkPolicyList",
        "StagedNetworkPolicy",
        "StagedGlobalNetworkPolicy",
        "StagedKubernetesNetworkPolicy",
        "Tier",
    }
)
"""Kinds that change reachability in some CNI but that this analysis does not interpret."""

Object = tuple[str, Reader, dict[str, Any], list[errors.Problem]]


def load(paths: Sequence[str | Path]) -> cluster.Cluster:
    """Read files and directories (*.yaml, *.yml, *.json, recursively; hidden ones skipped)."""
    docs, problems = loader.read(paths, SUFFIXES)
    return from_documents(docs, problems)


def load_text(text: str, filename: str = "<text>") -> cluster.Cluster:
    """Read one YAML or JSON text (tests, the API); `filename` is what problems name."""
    docs, problems = nodes.parse(text, filename)
    return from_documents(docs, problems)


def from_objects(objects: Sequence[Any], source: str) -> cluster.Cluster:
    """Read objects that are already plain data (from the API server); `source` names them in
    problems, each object being one document."""
    docs = [nodes.Document(source, i, obj) for i, obj in enumerate(objects)]
    return from_documents(docs, [])


def from_documents(docs: list[nodes.Document], problems: list[errors.Problem]) -> cluster.Cluster:
    """Build the cluster from parsed documents; raise ManifestError when anything is wrong."""
    objects = [obj for doc in docs for obj in _objects(doc)]
    found = _assemble(_build(objects))
    for _, r, data, own in objects:
        where = _document_name(r, data)
        problems.extend(dataclasses.replace(p, field=f"{where} {p.field}".strip()) for p in own)
    if problems:
        raise errors.ManifestError(problems)
    return found


def _objects(doc: nodes.Document) -> list[Object]:
    """The objects of one document: itself, or the items of a List."""
    found: list[errors.Problem] = []
    r = Reader(doc, found)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        r.error(
            (), f"expected a Kubernetes object (a mapping with apiVersion and kind), got {describe(data)}"
        )
        return [("", r, {}, found)]
    if data["kind"] == "List" or (data["kind"].endswith("List") and "items" in data):
        out: list[Object] = []
        for path, item in r.items(data.get("items") or [], ("items",)):
            item_found: list[errors.Problem] = []
            ir = Reader(doc, item_found, path)
            if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                ir.error((), f"expected a Kubernetes object with a kind, got {describe(item)}")
                item = {}
            out.append((str(item.get("kind", "")), ir, item, item_found))
        return out + ([("", r, {}, found)] if found else [])
    return [(data["kind"], r, data, found)]


@dataclasses.dataclass
class _Built:
    namespaces: dict[str, cluster.Namespace] = dataclasses.field(default_factory=dict)
    pods: list[tuple[cluster.Pod, Reader]] = dataclasses.field(default_factory=list)
    templates: list[tuple[cluster.Pod, Reader]] = dataclasses.field(default_factory=list)
    policies: list[tuple[netpol.NetworkPolicy, Reader]] = dataclasses.field(default_factory=list)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)


def _build(objects: list[Object]) -> _Built:
    built = _Built()
    for kind, r, data, _ in objects:
        if kind == "Namespace":
            ns = pods.namespace(r, data)
            if ns is not None:
                _unique(r, built.namespaces, ns.name, ns, "namespace")
        elif kind == "Pod":
            pod = pods.pod(r, data)
            if pod is not None:
                built.pods.append((pod, r))
        elif kind in pods.TEMPLATES:
            template = pods.template_pod(r, data, kind)
            if template is not None:
                built.templates.append((template, r))
        elif kind == "NetworkPolicy":
            if data.get("apiVersion") != policies.API_VERSION:
                r.error(
                    ("apiVersion",),
                    f"NetworkPolicy must be {policies.API_VERSION}, got {describe(data.get('apiVersion'))}",
                )
                continue
            policy = policies.network_policy(r, data)
            if policy is not None:
                built.policies.append((policy, r))
        elif kind:
            built.skipped[kind] += 1
    return built


def _unique(r: Reader, seen: dict[str, Any], key: str, value: Any, noun: str) -> None:
    if key in seen:
        r.error(("metadata", "name"), f"duplicate {noun} {key}")
    else:
        seen[key] = value


def _assemble(built: _Built) -> cluster.Cluster:
    """The cluster; duplicates are reported on the readers of the later definitions."""
    notes = [
        f"{kind}: {count} object{'s' if count != 1 else ''} not analysed (this analysis reads "
        f"{policies.API_VERSION} NetworkPolicy only)"
        for kind, count in sorted(built.skipped.items())
        if kind in OTHER_POLICY_KINDS
    ]
    chosen = built.pods
    if built.pods and built.templates:
        notes.append(f"{len(built.templates)} controller templates ignored: the manifests hold Pod objects")
    elif not built.pods:
        chosen = _name_templates(built.templates)
    by_ref: dict[str, cluster.Pod] = {}
    for pod, r in chosen:
        _unique(r, by_ref, pod.ref, pod, "pod")
    by_policy: dict[str, netpol.NetworkPolicy] = {}
    for policy, r in built.policies:
        _unique(r, by_policy, policy.ref, policy, "NetworkPolicy")
    return cluster.Cluster.of(
        built.namespaces, tuple(by_ref.values()), tuple(by_policy.values()), tuple(notes)
    )


def _name_templates(templates: list[tuple[cluster.Pod, Reader]]) -> list[tuple[cluster.Pod, Reader]]:
    """Template pods are named after their controller; a name two controllers share gets the kind."""
    counts = Counter(p.ref for p, _ in templates)
    out = []
    for pod, r in templates:
        if counts[pod.ref] > 1:
            kind = pod.origin.split()[0].lower()
            pod = dataclasses.replace(pod, name=f"{pod.name}-{kind}")
        out.append((pod, r))
    return out


def _document_name(r: Reader, data: dict[str, Any]) -> str:
    """`document 2 (NetworkPolicy shop/allow-web)`: where a problem is, beside file and line."""
    kind = f" ({policies.describe_kind(data)})" if data.get("kind") else ""
    return f"document {r.doc.index + 1}{kind}"
