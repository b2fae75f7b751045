"""Large synthetic estates for benchmarks and property tests (deterministic for a seed).

`generate(10_000, 500, 2_000)` gives 10,000 workloads spread evenly over exactly 500 distinct label
sets (keys env, app, role, loc, team), unique host addresses counted up from 10.77.0.1 (numbers
only: these estates are never routed), and rules in the security and application tiers with unique
priorities: selectors mixing matchLabels and matchExpressions, some IP-list and CIDR peers, deny
and pass rules among the allows, realistic services.
"""

from __future__ import annotations

import ipaddress
import random

from microseg.model import estate, iplists, labels, rules, selectors, services, workloads

ENVS = ("prod", "stage", "dev", "qa")
ROLES = ("lb", "web", "app", "db", "cache", "queue", "worker")
LOCS = ("eu-west", "us-east", "ap-south")
PORTS = {"lb": 443, "web": 8080, "app": 8443, "db": 5432, "cache": 6379, "queue": 5672, "worker": 9000}


def _service(role: str) -> services.Service:
    port = PORTS[role]
    spec = services.PortSpec(services.Protocol.TCP, (services.PortRange(port, port),))
    return services.Service(f"{role}-svc", (spec,))


def _label_sets(count: int, rnd: random.Random) -> list[labels.Labels]:
    found: set[labels.Labels] = set()
    apps = max(1, count // 10)
    while len(found) < count:
        found.add(
            labels.Labels(
                {
                    "env": rnd.choice(ENVS),
                    "app": f"app{rnd.randrange(apps):03d}",
                    "role": rnd.choice(ROLES),
                    "loc": rnd.choice(LOCS),
                    "team": f"team{rnd.randrange(20):02d}",
                }
            )
        )
    return sorted(found)


def _selector(rnd: random.Random, pool: list[labels.Labels]) -> selectors.Peer:
    """A selector derived from a real label set, so that it matches something."""
    base = rnd.choice(pool)
    roll = rnd.random()
    if roll < 0.6:
        return selectors.SelectorPeer(
            selectors.LabelSelector.of({k: base[k] for k in ("env", "app", "role")})
        )
    if roll < 0.85:
        exprs = (
            selectors.Requirement("role", selectors.Operator.IN, (base["role"], rnd.choice(ROLES))),
            selectors.Requirement("env", selectors.Operator.NOT_IN, ("dev",)),
        )
        return selectors.SelectorPeer(selectors.LabelSelector.of({"app": base["app"]}, exprs))
    return selectors.SelectorPeer(selectors.LabelSelector.of({"env": base["env"], "role": base["role"]}))


def _rule(i: int, rnd: random.Random, pool: list[labels.Labels], security: int) -> rules.Rule:
    tier = "security" if i < security else "application"
    dst = _selector(rnd, pool)
    role = rnd.choice(ROLES)
    if tier == "security":
        action = rnd.choice((rules.Action.DENY, rules.Action.DENY, rules.Action.PASS, rules.Action.ALLOW))
    else:
        action = rules.Action.DENY if rnd.random() < 0.05 else rules.Action.ALLOW
    src: selectors.Peer = _selector(rnd, pool)
    roll = rnd.random()
    if roll < 0.05:
        src = selectors.IpListPeer("corp")
    elif roll < 0.08:
        src = selectors.CidrPeer((ipaddress.ip_network(f"10.{100 + rnd.randrange(50)}.0.0/16"),))
    return rules.Rule(
        f"r{i:05d}", tier, i, action, (src,), (dst,), (_service(role),), policy=f"synthetic-{tier}"
    )


def generate(
    workloads_count: int = 10_000, label_sets: int = 500, rules_count: int = 2_000, seed: int = 0
) -> estate.Estate:
    """A synthetic estate; the same arguments always give the same estate."""
    rnd = random.Random(seed)
    pool = _label_sets(label_sets, rnd)
    base = int(ipaddress.ip_address("10.77.0.0"))
    ws = tuple(
        workloads.Workload(
            f"wl-{i:06d}",
            addresses=(ipaddress.ip_network(ipaddress.ip_address(base + i + 1)),),
            labels=pool[i % len(pool)],
            mode=workloads.Mode.ENFORCE if i % 10 else workloads.Mode.ALERT,
        )
        for i in range(workloads_count)
    )
    security = rules_count // 10
    rs = tuple(_rule(i, rnd, pool, security) for i in range(rules_count))
    corp = iplists.IpList("corp", (ipaddress.ip_network("10.200.0.0/16"),))
    return estate.Estate(workloads=ws, rules=rs, ip_lists=(corp,), services=tuple(_service(r) for r in ROLES))
