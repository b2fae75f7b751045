"""Translation validation for the exporters: the engine's verdict for every ordered pod pair and
probe, against what the section-1 analyzer says the exported NetworkPolicies allow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import yaml

from microseg.engine import engine
from microseg.k8s import cluster, export, export_base, importer, manifests, reachability
from microseg.model import services, verdicts
from microseg.model.estate import Estate

Verdicts = dict[tuple[str, str, reachability.Probe], bool]


def probes_for(est: Estate, extra: Iterable[int] = (1, 65535)) -> list[reachability.Probe]:
    """Every port edge the rules' services have (first, last, and one beyond each), per protocol."""
    found: set[reachability.Probe] = set()
    edges = set(extra)
    for svc in [*est.services, *(s for r in est.rules for s in r.services)]:
        for spec in svc.specs:
            for r in spec.ports:
                edges |= {r.first, r.last, max(1, r.first - 1), min(65535, r.last + 1)}
    for port in edges:
        for protocol in (services.Protocol.TCP, services.Protocol.UDP, services.Protocol.SCTP):
            found.add(reachability.Probe(port, protocol))
    return sorted(found)


def engine_verdicts(est: Estate, found: cluster.Cluster, probes: list[reachability.Probe]) -> Verdicts:
    """What microseg says, with the pods as workloads beside the estate's other workloads, keyed
    by pod reference (`namespace/pod`, as the analyzer names pods; workloads are `namespace.pod`)."""
    pods = importer.import_pods(found).workloads
    ref = {importer.workload_name(p): p.ref for p in found.pods}
    others = tuple(w for w in est.workloads if w.kind.value != "pod")
    eng = engine.PolicyEngine(est.with_workloads(others + pods))
    out: Verdicts = {}
    for s in pods:
        for d in pods:
            if s.name == d.name:
                continue
            src = verdicts.Endpoint(s.addresses[0].network_address, s.name)
            dst = verdicts.Endpoint(d.addresses[0].network_address, d.name)
            for probe in probes:
                out[(ref[s.name], ref[d.name], probe)] = eng.evaluate(
                    src, dst, probe.port, probe.protocol
                ).allowed
    return out


def exported_verdicts(
    result: export.Export, found: cluster.Cluster, probes: list[reachability.Probe]
) -> Verdicts:
    """What the analyzer says of the exported NetworkPolicies (read back from their YAML)."""
    text = yaml.safe_dump_all(list(result.manifests), sort_keys=False)
    policies = manifests.load_text(text, "exported.yaml").policies if result.manifests else ()
    analysed = reachability.Reachability(dataclasses.replace(found, policies=policies), probes)
    pods = analysed.pods
    return {(pods[s].ref, pods[d].ref, p): ok for s, d, p, ok in analysed.verdicts()}


def disagreements(
    est: Estate,
    found: cluster.Cluster,
    options: export_base.Options,
    probes: list[reachability.Probe] | None = None,
) -> list[str]:
    """Every (pair, probe) between pods in the export's namespaces where the exported
    NetworkPolicies and the engine differ. Pods elsewhere (kube-system unless --namespace names
    it) are deliberately left alone, so they are not compared; nor is the DNS allowance, which
    only opens egress to kube-dns: it changes no verdict between two pods in scope, since the
    destination's ingress still needs a rule, and test_export_dns checks it on its own."""
    probes = probes or probes_for(est)
    result = export.export(est, found, export.Format.NETWORKPOLICY, options)
    want = in_scope(engine_verdicts(est, found, probes), found, options)
    got = in_scope(exported_verdicts(result, found, probes), found, options)
    assert set(want) == set(got)
    return [
        f"{s} -> {d} {p}: engine {want[(s, d, p)]}, NetworkPolicy {got[(s, d, p)]}"
        for (s, d, p) in sorted(want)
        if want[(s, d, p)] != got[(s, d, p)]
    ]


def in_scope(found: Verdicts, inventory: cluster.Cluster, options: export_base.Options) -> Verdicts:
    """The verdicts between pods of the namespaces an export isolates."""
    scope = set(export_base.namespaces_in_scope(inventory, options)[0])
    return {k: v for k, v in found.items() if k[0].split("/")[0] in scope and k[1].split("/")[0] in scope}
