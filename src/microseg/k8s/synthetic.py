"""Deterministic synthetic clusters as manifest text, for the benchmark and property tests.

`manifests_text(pods=2000, namespaces=50, policies=500, seed=0)` writes Namespaces, Pods (with IPs
and named container ports) and NetworkPolicies of every shape the analyzer knows: default denies
in both directions, same-app ingress, cross-namespace ingress by namespace and pod selectors,
matchExpressions of every operator, named ports, endPort ranges, ipBlocks with except, egress to
a shared DNS namespace. Same arguments, same text.

What it deliberately does not do: claim to be a real cluster; it only has to be a hard one.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import yaml

APPS = ("web", "api", "db", "cache", "queue", "auth", "search", "report")
ROLES = ("frontend", "backend", "data")
PORTS = {
    "web": (8080, "http"),
    "api": (8443, "https"),
    "db": (5432, "pg"),
    "cache": (6379, "redis"),
    "queue": (5672, "amqp"),
    "auth": (9000, "auth"),
    "search": (9200, "es"),
    "report": (8081, "http"),
}


def manifests_text(pods: int = 2000, namespaces: int = 50, policies: int = 500, seed: int = 0) -> str:
    """The cluster as one multi-document YAML text."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    names = [f"ns-{i:03d}" for i in range(namespaces)]
    for i, name in enumerate(names):
        docs.append(_namespace(name, ("prod", "dev")[i % 2], f"team-{i % 7}"))
    base = int(ipaddress.IPv4Address("10.200.0.1"))
    for i in range(pods):
        app = APPS[i % len(APPS)]
        ns = names[(i // len(APPS)) % namespaces]
        found = {"app": app, "role": ROLES[i % len(ROLES)], "version": f"v{rng.randint(1, 3)}"}
        docs.append(_pod(ns, f"{app}-{i:05d}", found, str(ipaddress.IPv4Address(base + i)), rng))
    for i in range(policies):
        docs.append(_policy(names[i % namespaces], i, names, rng))
    return yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def _namespace(name: str, env: str, team: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"env": env, "team": team}},
    }


def _pod(ns: str, name: str, found: dict[str, str], ip: str, rng: random.Random) -> dict[str, Any]:
    number, port_name = PORTS[found["app"]]
    ports: list[dict[str, Any]] = [{"name": port_name, "containerPort": number, "protocol": "TCP"}]
    ports.append({"name": "metrics", "containerPort": 9100})
    if rng.random() < 0.2:
        ports.append({"name": "dns", "containerPort": 53, "protocol": "UDP"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": found},
        "spec": {"containers": [{"name": "main", "image": f"example/{found['app']}", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _labels(**found: str) -> dict[str, Any]:
    return {"matchLabels": found}


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": key, "operator": operator, **({"values": list(values)} if values else {})}
        ]
    }


def _policy(ns: str, i: int, names: list[str], rng: random.Random) -> dict[str, Any]:
    """Policy `i`: its shape cycles over the namespaces, so every namespace gets every shape."""
    shape = i // len(names) % 8
    app, other = APPS[rng.randrange(len(APPS))], APPS[rng.randrange(len(APPS))]
    dns = {"port": 53, "protocol": "UDP"}
    spec: dict[str, Any]
    if shape == 0:  # default deny; even namespaces also deny egress but to DNS and their own pods
        spec = {"podSelector": {}, "policyTypes": ["Ingress"]}
        if names.index(ns) % 2 == 0:
            to_dns = {"namespaceSelector": _labels(**{"kubernetes.io/metadata.name": names[0]})}
            spec["policyTypes"] = ["Ingress", "Egress"]
            spec["egress"] = [
                {"to": [to_dns], "ports": [dns, {"port": "dns", "protocol": "UDP"}]},
                {"to": [{"podSelector": {}}]},
            ]
    elif shape == 1:  # one app reaches another's named port
        rule = {"from": [{"podSelector": _labels(app=other)}], "ports": [{"port": PORTS[app][1]}]}
        spec = {"podSelector": _labels(app=app), "ingress": [rule]}
    elif shape == 2:  # frontends of prod namespaces reach backends on a port range
        peer = {"namespaceSelector": _labels(env="prod"), "podSelector": _labels(role="frontend")}
        rule = {"from": [peer], "ports": [{"port": 8000, "endPort": 9000}]}
        spec = {"podSelector": _expr("role", "In", "backend", "data"), "ingress": [rule]}
    elif shape == 3:  # an app may reach newer versions in namespaces of any team
        peer = {"podSelector": _expr("version", "NotIn", "v1"), "namespaceSelector": _expr("team", "Exists")}
        rule = {"to": [peer], "ports": [{"port": PORTS[other][1]}, {"port": "metrics"}]}
        spec = {"podSelector": _labels(app=app), "policyTypes": ["Egress"], "egress": [rule]}
    elif shape == 4:  # the pod network but one block reaches a role
        block = {"cidr": "10.200.0.0/16", "except": [f"10.200.{rng.randrange(0, 8)}.0/24"]}
        spec = {
            "podSelector": _labels(role=ROLES[rng.randrange(3)]),
            "ingress": [{"from": [{"ipBlock": block}]}],
        }
    elif shape == 5:  # unlabelled pods stay open
        spec = {"podSelector": _expr("app", "DoesNotExist"), "ingress": [{}]}
    elif shape == 6:  # metrics from everywhere, and scraping out to part of the pod network
        spec = {
            "podSelector": _labels(app=app),
            "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "metrics"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.200.0.0/20"}}], "ports": [{"port": 9100}]}],
        }
    else:  # a version of an app from another app or a team's namespaces
        peers = [
            {"podSelector": _labels(app=other)},
            {"namespaceSelector": _labels(team=f"team-{rng.randrange(7)}")},
        ]
        rule = {"from": peers, "ports": [{"port": PORTS[app][0]}, {"port": 9100}]}
        spec = {"podSelector": _labels(app=app, version=f"v{rng.randint(1, 3)}"), "ingress": [rule]}
    meta = {"name": f"policy-{i:04d}", "namespace": ns}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}
