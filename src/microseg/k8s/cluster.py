"""A Kubernetes cluster as the analyzer and the importer see it: namespaces, pods, NetworkPolicies.

Built by `microseg.k8s.manifests` from standard manifests; read by `microseg.k8s.reachability`
(what the NetworkPolicies allow), `microseg.k8s.importer` (pods as microseg workloads) and the
exporters (which namespaces get policies). Pure frozen values, like `microseg.model`.

What it deliberately does not do: know where the objects came from (files, an API server) or what
the policies mean; `microseg.k8s.netpol` holds the policy values and their matching rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from microseg.k8s import netpol
from microseg.model import addresses, labels, services

NAME_LABEL = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace (its name), which namespaceSelectors may use."""


@dataclass(frozen=True)
class Namespace:
    """A namespace and its labels (always including `kubernetes.io/metadata.name`)."""

    name: str
    labels: labels.Labels = field(default_factory=labels.Labels)

    @classmethod
    def of(cls, name: str, own: Mapping[str, str] | None = None) -> Namespace:
        """A namespace with the name label added, as the API server adds it."""
        return cls(name, labels.Labels({**(own or {}), NAME_LABEL: name}))


@dataclass(frozen=True, order=True)
class ContainerPort:
    """One port a pod's container declares; `name` is what named ports in policies refer to."""

    port: int
    protocol: services.Protocol = services.Protocol.TCP
    name: str | None = None


@dataclass(frozen=True)
class Pod:
    """A pod (or the one pod standing for a controller's template, which has no address)."""

    namespace: str
    name: str
    labels: labels.Labels = field(default_factory=labels.Labels)
    ips: tuple[addresses.Address, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    origin: str = "Pod"
    """`Pod`, or `Deployment template` etc. for a pod made from a controller's template."""

    @property
    def ref(self) -> str:
        """`namespace/name`, how the analyzer's output names the pod."""
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: services.Protocol) -> int | None:
        """The number of the container port called `name` with `protocol`, if the pod has one."""
        return next((p.port for p in self.ports if p.name == name and p.protocol is protocol), None)


@dataclass(frozen=True)
class Cluster:
    """Everything read from the manifests. Pods are sorted by `ref`; every pod's namespace exists."""

    namespaces: Mapping[str, Namespace]
    pods: tuple[Pod, ...]
    policies: tuple[netpol.NetworkPolicy, ...] = ()
    notes: tuple[str, ...] = ()
    """What was read but not used (other kinds, controllers beside Pod objects, ...), for people."""

    @classmethod
    def of(
        cls,
        namespaces: Mapping[str, Namespace] | None = None,
        pods: tuple[Pod, ...] = (),
        policies: tuple[netpol.NetworkPolicy, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> Cluster:
        """A cluster with namespaces added for pods and policies whose namespace has no object."""
        found = dict(namespaces or {})
        for name in [p.namespace for p in pods] + [p.namespace for p in policies]:
            found.setdefault(name, Namespace.of(name))
        ordered = {name: found[name] for name in sorted(found)}
        return cls(ordered, tuple(sorted(pods, key=lambda p: p.ref)), tuple(policies), tuple(notes))

    def namespace_labels(self, name: str) -> labels.Labels:
        """The labels of namespace `name`."""
        return self.namespaces[name].labels
