"""Namespace, Pod and controller-template documents -> `cluster` values, problems collected.

Fed by `microseg.k8s.manifests` one object at a time. Manifests from a real cluster carry many
fields nobody here needs (status conditions, managedFields, ...): these builders read only what
reachability needs -- names, labels, container ports, pod IPs -- and check only that, so a
`kubectl get -o yaml` dump loads as it is. A wrong value in a field that is read is a problem.

What it deliberately does not do: read NetworkPolicies (`microseg.k8s.policies` does, strictly).
"""

from __future__ import annotations

import re
from typing import Any

from microseg.errors import ValidationError
from microseg.k8s import cluster
from microseg.model import addresses, labels, services
from microseg.policyfile.reader import Reader, describe

TEMPLATES: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
"""Controllers whose pod template stands for their pods when the manifests hold no Pod objects."""

FINISHED_PHASES = ("Succeeded", "Failed")
"""Pods in these phases run nothing and hold no address any more."""

_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
"""IANA_SVC_NAME: 1-15 lowercase letters, digits and '-', at least one letter, no '--'."""


def metadata(r: Reader, data: dict[str, Any], path: tuple[str | int, ...] = ("metadata",)) -> dict[str, Any]:
    """The metadata mapping (empty, with a problem, when it is not a mapping)."""
    meta = dig(data, path)
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        r.error(path, f"expected a mapping, got {describe(meta)}")
        return {}
    return meta


def name_and_namespace(
    r: Reader, meta: dict[str, Any], path: tuple[str | int, ...]
) -> tuple[str | None, str]:
    """metadata.name (required) and metadata.namespace (default `default`)."""
    name = r.text(meta.get("name"), (*path, "name"))
    namespace = r.text(meta["namespace"], (*path, "namespace")) if "namespace" in meta else "default"
    return name, namespace or "default"


def own_labels(r: Reader, meta: dict[str, Any], path: tuple[str | int, ...]) -> labels.Labels | None:
    """metadata.labels (none: an empty set; wrong: None and a problem)."""
    raw = meta.get("labels")
    return labels.Labels() if raw is None else r.labels(raw, (*path, "labels"))


def namespace(r: Reader, data: dict[str, Any]) -> cluster.Namespace | None:
    """A Namespace object."""
    meta = metadata(r, data)
    name = r.text(meta.get("name"), ("metadata", "name"))
    found = own_labels(r, meta, ("metadata",))
    if name is None or found is None:
        return None
    return cluster.Namespace.of(name, found)


def pod(r: Reader, data: dict[str, Any]) -> cluster.Pod | None:
    """A Pod object, with its addresses from status (a finished pod: None, and no problem)."""
    meta = metadata(r, data)
    name, ns = name_and_namespace(r, meta, ("metadata",))
    found = own_labels(r, meta, ("metadata",))
    ports = container_ports(r, data.get("spec"), ("spec",))
    raw_status = data.get("status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    ips = pod_ips(r, status)
    if (
        name is None
        or found is None
        or ports is None
        or ips is None
        or status.get("phase") in FINISHED_PHASES
    ):
        return None
    return cluster.Pod(ns, name, found, ips, ports)


def template_pod(r: Reader, data: dict[str, Any], kind: str) -> cluster.Pod | None:
    """The pod a controller's template describes, named after the controller; it has no address."""
    meta = metadata(r, data)
    name, ns = name_and_namespace(r, meta, ("metadata",))
    path = TEMPLATES[kind]
    template = dig(data, path)
    if not isinstance(template, dict):
        r.error(path, f"expected the pod template (a mapping), got {describe(template)}")
        return None
    found = own_labels(r, metadata(r, data, (*path, "metadata")), (*path, "metadata"))
    ports = container_ports(r, template.get("spec"), (*path, "spec"))
    if name is None or found is None or ports is None:
        return None
    return cluster.Pod(ns, name, found, (), ports, origin=f"{kind} template")


def container_ports(
    r: Reader, spec: Any, path: tuple[str | int, ...]
) -> tuple[cluster.ContainerPort, ...] | None:
    """Every port of every container of a pod spec (init containers serve nothing)."""
    if spec is None:
        return ()
    if not isinstance(spec, dict):
        r.error(path, f"expected a pod spec (a mapping), got {describe(spec)}")
        return None
    out: list[cluster.ContainerPort] = []
    ok = True
    for cpath, container in r.items(spec.get("containers", []), (*path, "containers")):
        if not isinstance(container, dict):
            r.error(cpath, f"expected a container (a mapping), got {describe(container)}")
            ok = False
            continue
        for ppath, entry in r.items(container.get("ports", []), (*cpath, "ports")):
            port = container_port(r, entry, ppath)
            ok = ok and port is not None
            if port is not None:
                out.append(port)
    return tuple(sorted(set(out))) if ok else None


def container_port(r: Reader, entry: Any, path: tuple[str | int, ...]) -> cluster.ContainerPort | None:
    """One `containerPort` entry: number (required), protocol (default TCP), name (optional)."""
    if not isinstance(entry, dict):
        r.error(path, f"expected a mapping with containerPort, got {describe(entry)}")
        return None
    number = port_number(r, entry.get("containerPort"), (*path, "containerPort"))
    protocol = protocol_of(r, entry, path)
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not _PORT_NAME.fullmatch(name)):
        r.error((*path, "name"), f"{describe(name)} is not a port name (1-15 lowercase letters, digits, '-')")
        return None
    if number is None or protocol is None:
        return None
    return cluster.ContainerPort(number, protocol, name)


def port_number(r: Reader, value: Any, path: tuple[str | int, ...]) -> int | None:
    """A port number, 1-65535."""
    number = r.integer(value, path)
    if number is not None and not 1 <= number <= 65535:
        r.error(path, f"port {number} is outside 1-65535")
        return None
    return number


def protocol_of(r: Reader, entry: dict[str, Any], path: tuple[str | int, ...]) -> services.Protocol | None:
    """`protocol` of a port entry: TCP (the default), UDP or SCTP."""
    raw = entry.get("protocol", "TCP")
    if raw not in ("TCP", "UDP", "SCTP"):
        r.error((*path, "protocol"), f"{describe(raw)} is not TCP, UDP or SCTP")
        return None
    return services.Protocol(raw.lower())


def is_port_name(value: str) -> bool:
    """Whether `value` is a valid named port (IANA_SVC_NAME)."""
    return bool(_PORT_NAME.fullmatch(value))


def pod_ips(r: Reader, status: dict[str, Any]) -> tuple[addresses.Address, ...] | None:
    """status.podIP and status.podIPs[].ip, without repeats."""
    raw: list[tuple[tuple[str | int, ...], Any]] = []
    if "podIP" in status:
        raw.append((("status", "podIP"), status["podIP"]))
    for path, entry in r.items(status.get("podIPs", []), ("status", "podIPs")):
        raw.append(((*path, "ip"), entry.get("ip") if isinstance(entry, dict) else entry))
    out: list[addresses.Address] = []
    for path, value in raw:
        if value in (None, ""):
            continue
        try:
            out.append(addresses.address(str(value)))
        except ValidationError as exc:
            r.error(path, exc.message)
            return None
    return tuple(dict.fromkeys(out))


def dig(data: Any, path: tuple[str | int, ...]) -> Any:
    """`data[path[0]][path[1]]...`, or None where a step is missing."""
    for step in path:
        if not isinstance(data, dict) or step not in data:
            return None
        data = data[step]
    return data
