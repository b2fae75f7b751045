"""`microseg k8s export`: microseg policy -> NetworkPolicy, Calico or Cilium manifests, exactly.

The one entry point: an estate (policy files) plus a cluster (the inventory of pods) in, a list
of manifests out, or InexpressibleError naming the rule the format cannot say. Pods become
workloads as `microseg.k8s.importer` makes them (labels, `k8s.namespace`, `k8s.ns.*`, mode), the
estate's other workloads stay what they are, and the rule book orders every rule, the built-in
quarantine rules included. Then each format does what it can natively:

- networkpolicy: no order, no deny: rules are flattened (`microseg.k8s.flatten`) into the flows
  each allow rule decides on its own; every namespace gets a default deny;
- calico: tiers, order, Allow/Deny/Pass are native, so rules map one to one;
- cilium: deny always wins over allow, so denies lose what earlier allows let through.

Modes: a pod in alert or visibility mode is never blocked at its own end (microseg blocks a flow
when either end enforces), so each format lets such pods' own traffic through; quarantine forces
enforce, as in the engine.

What it deliberately does not do: talk to a cluster; the manifests are printed or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from microseg.k8s import cluster, export_base, export_calico, export_cilium, export_netpol
from microseg.model.estate import Estate


class Format(StrEnum):
    """What `microseg k8s export` writes."""

    NETWORKPOLICY = "networkpolicy"
    CALICO = "calico"
    CILIUM = "cilium"


@dataclass(frozen=True)
class Export:
    """The manifests, and warnings a person should read (never silent)."""

    manifests: tuple[export_base.Manifest, ...]
    warnings: tuple[str, ...]


WRITERS = {
    Format.NETWORKPOLICY: export_netpol.write,
    Format.CALICO: export_calico.write,
    Format.CILIUM: export_cilium.write,
}


def export(
    est: Estate, found: cluster.Cluster, fmt: Format, options: export_base.Options | None = None
) -> Export:
    """The manifests for `fmt`, or InexpressibleError naming the rule the format cannot say."""
    ctx = export_base.context(est, found, options or export_base.Options())
    manifests, warnings = WRITERS[fmt](ctx)
    return Export(tuple(manifests), (*ctx.notes, *warnings))
