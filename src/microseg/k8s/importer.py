"""Pods -> microseg workloads of kind `pod`, so that one policy can span VMs, hosts and pods.

Fed by a `cluster.Cluster` (from manifests or the API server); feeds `microseg k8s import` and the
exporters. A pod's workload carries:

- the pod's own labels, as they are;
- `k8s.namespace=<namespace>`: the namespace as a label;
- `k8s.ns.<key>=<value>` for each label of the namespace (`k8s.ns.kubernetes.io/metadata.name`
  included), so a selector can say "pods of namespaces labelled env=prod": `k8s.ns.env=prod`;
- its mode from the label `microseg.io/mode` on the pod, else on its namespace, else `enforce`;
- the name `namespace.pod` (`workload_name`: one name grammar with the server, no `/`).

The exporters translate `k8s.namespace` and `k8s.ns.*` back into namespaceSelectors. A pod label
whose key already uses those names would be ambiguous, so it is left out (and said so).

What it deliberately does not do: invent addresses. A pod made from a controller's template has
none, and a workload needs one, so such pods are skipped with a note.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from microseg import errors
from microseg.k8s import cluster
from microseg.model import addresses, labels, names, workloads

NAMESPACE_KEY = "k8s.namespace"
NS_LABEL_PREFIX = "k8s.ns."
MODE_LABEL = "microseg.io/mode"


@dataclass(frozen=True)
class Imported:
    """The workloads made, and what could not be carried over."""

    workloads: tuple[workloads.Workload, ...]
    notes: tuple[str, ...]


def namespace_label_key(key: str) -> str:
    """The workload label key a namespace label becomes: `team` -> `k8s.ns.team`."""
    return NS_LABEL_PREFIX + key


def is_namespace_key(key: str) -> bool:
    """Whether a workload label key stands for the namespace or one of its labels."""
    return key == NAMESPACE_KEY or key.startswith(NS_LABEL_PREFIX)


def namespace_labels(namespace: cluster.Namespace) -> tuple[dict[str, str], list[str]]:
    """The workload labels a namespace gives its pods (`k8s.namespace`, `k8s.ns.*`), and notes on
    namespace labels whose key is too long to carry."""
    out, notes = {NAMESPACE_KEY: namespace.name}, []
    for key, value in namespace.labels.items():
        mapped = namespace_label_key(key)
        try:
            labels.check_key(mapped)
        except errors.ValidationError:
            notes.append(
                f"namespace {namespace.name}: label {key} cannot be a workload label key as {mapped}"
            )
            continue
        out[mapped] = value
    return out, notes


def workload_labels(pod: cluster.Pod, namespace: cluster.Namespace) -> tuple[labels.Labels, list[str]]:
    """The labels a pod's workload carries, and notes on labels that could not be carried."""
    own, notes = {}, []
    for key, value in pod.labels.items():
        if is_namespace_key(key):
            notes.append(f"pod {pod.ref}: label {key} left out (the key is reserved for namespace labels)")
        else:
            own[key] = value
    from_namespace, more = namespace_labels(namespace)
    return labels.Labels({**own, **from_namespace}), notes + more


def mode_of(pod: cluster.Pod, namespace: cluster.Namespace) -> workloads.Mode:
    """`microseg.io/mode` of the pod, else of its namespace, else enforce."""
    raw = pod.labels.get(MODE_LABEL, namespace.labels.get(MODE_LABEL, workloads.Mode.ENFORCE.value))
    try:
        return workloads.Mode(raw)
    except ValueError:
        choices = ", ".join(m.value for m in workloads.Mode)
        raise errors.ValidationError(f"pod {pod.ref}: {MODE_LABEL}={raw} is not one of {choices}") from None


def workload_name(pod: cluster.Pod) -> str:
    """The workload name of a pod: `namespace.pod`. A namespace has no dots (a DNS label), so the
    first dot splits it back; `/` is not in the one name grammar (`model.names`: a name is one URL
    path segment). A name longer than the grammar allows keeps its start and ends in a digest of
    the whole, so that two long names stay two."""
    full = f"{pod.namespace}.{pod.name}"
    if len(full) <= names.MAX_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:12]
    return f"{full[: names.MAX_LENGTH - len(digest) - 1]}-{digest}"


def workload(pod: cluster.Pod, namespace: cluster.Namespace) -> tuple[workloads.Workload, list[str]]:
    """The workload standing for one pod that has addresses."""
    found, notes = workload_labels(pod, namespace)
    nets = tuple(addresses.network(str(ip)) for ip in pod.ips)
    attributes = {"hostname": pod.name, "k8s.namespace": pod.namespace, "k8s.origin": pod.origin}
    made = workloads.Workload(
        workload_name(pod), workloads.WorkloadKind.POD, nets, found, attributes, mode_of(pod, namespace)
    )
    return made, notes


def import_pods(found: cluster.Cluster) -> Imported:
    """Every pod with an address as a workload, in pod order."""
    made, notes = [], []
    skipped = [p.ref for p in found.pods if not p.ips]
    for pod in found.pods:
        if pod.ips:
            one, why = workload(pod, found.namespaces[pod.namespace])
            made.append(one)
            notes.extend(why)
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        notes.append(f"{len(skipped)} pods without an address skipped (a workload needs one): {shown}")
    return Imported(tuple(made), tuple(notes))
