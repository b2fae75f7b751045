"""Large synthetic estates for benchmarks and property tests (deterministic for a seed).

`generate(10_000, 500, 2_000)` gives 10,000 workloads spread evenly over exactly 500 distinct label
sets (keys env, app, role, loc, team), unique host addresses counted up from 10.77.0.1 into
10.78.0.0 and beyond (numbers only: these estates are never routed), and rules in the security
and application tiers with unique priorities: selectors mixing matchLabels and matchExpressions
(In, NotIn, Exists, DoesNotExist), IP-list, CIDR and `any` peers, deny and pass rules among the
allows, a few time windows and disabled rules, and the services a three-tier estate really uses.

The estate is canonical (`canonical.ordered`), so `load(dump(generate(...))) == generate(...)`.
Selectors are derived from real label sets, so that most rules match something.
"""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

from microseg.model import estate, iplists, labels, rules, selectors, services, workloads
from microseg.policyfile import canonical

ENVS = ("prod", "stage", "dev", "qa")
ROLES = ("lb", "web", "app", "db", "cache", "queue", "worker", "batch")
LOCS = ("eu-west", "us-east", "ap-south")
FIRST_ADDRESS = int(ipaddress.IPv4Address("10.77.0.1"))
LAST_ADDRESS = int(ipaddress.IPv4Address("10.255.255.254"))

_TCP, _UDP = services.Protocol.TCP, services.Protocol.UDP
_Port = tuple[services.Protocol, int | None, int | None]
"""(protocol, first port, last port); None for "no ports" and "just the first"."""
_SERVICES: dict[str, tuple[tuple[_Port, ...], str | None, str | None]] = {  # ports, process, user
    "https": (((_TCP, 443, None),), None, None),
    "http": (((_TCP, 80, None), (_TCP, 8080, None)), "nginx", None),
    "app-api": (((_TCP, 8443, None), (_TCP, 9000, 9009)), None, None),
    "postgres": (((_TCP, 5432, None),), "postgres", "postgres"),
    "mysql": (((_TCP, 3306, None),), "mysqld", "mysql"),
    "redis": (((_TCP, 6379, None),), "redis-server", None),
    "amqp": (((_TCP, 5672, None), (_TCP, 15672, None)), None, None),
    "dns": (((_UDP, 53, None), (_TCP, 53, None)), None, None),
    "ntp": (((_UDP, 123, None),), None, None),
    "ssh": (((_TCP, 22, None),), "sshd", None),
    "node-exporter": (((_TCP, 9100, None),), None, None),
    "syslog": (((_UDP, 514, None), (_TCP, 6514, None)), None, None),
    "icmp": (((services.Protocol.ICMP, None, None),), None, None),
}
_ROLE_SERVICES = {
    "lb": ("https", "http"),
    "web": ("http",),
    "app": ("app-api",),
    "db": ("postgres", "mysql"),
    "cache": ("redis",),
    "queue": ("amqp",),
    "worker": ("app-api", "node-exporter"),
    "batch": ("ssh", "syslog"),
}
_IP_LISTS = {
    "corp-users": (("10.200.0.0/16",), ("10.200.255.0/24",)),
    "partners": (("10.201.0.0/16", "10.202.0.0/16"), ()),
    "monitoring": (("10.203.0.0/24",), ()),
    "forensics": (("10.204.0.0/24",), ()),
}
_WINDOW = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC))


def generate(
    workloads: int = 10_000, label_sets: int = 500, rules: int = 2_000, seed: int = 0
) -> estate.Estate:
    """A synthetic estate; the same arguments always give the same estate.

    Needs 1 <= label_sets <= workloads (each label set is used) and at most ~11.6 million workloads
    (the addresses stay inside 10.0.0.0/8).
    """
    if not 1 <= label_sets <= workloads:
        raise ValueError(f"need 1 <= label_sets ({label_sets}) <= workloads ({workloads})")
    if FIRST_ADDRESS + workloads - 1 > LAST_ADDRESS:
        raise ValueError(f"{workloads} workloads do not fit in 10.77.0.1-10.255.255.254")
    if rules < 0:
        raise ValueError(f"rules must not be negative, got {rules}")
    return _Generator(seed, label_sets).estate(workloads, rules)


class _Generator:
    """The random source and the label sets every choice is drawn from."""

    def __init__(self, seed: int, label_sets: int) -> None:
        self.rnd = random.Random(seed)
        self.pool = self._label_sets(label_sets)
        self.services = {name: _service(name) for name in _SERVICES}

    def _label_sets(self, count: int) -> list[labels.Labels]:
        found: set[labels.Labels] = set()
        apps = max(1, count // 10)
        while len(found) < count:
            app = self.rnd.randrange(apps)
            found.add(
                labels.Labels(
                    {
                        "env": self.rnd.choice(ENVS),
                        "app": f"app{app:03d}",
                        "role": self.rnd.choice(ROLES),
                        "loc": self.rnd.choice(LOCS),
                        "team": f"team{app % 20:02d}",  # a team owns its apps
                    }
                )
            )
        return sorted(found)

    def estate(self, count: int, rule_count: int) -> estate.Estate:
        security = rule_count // 10
        found = [self._rule(i, "security", i) for i in range(security)]
        found += [self._rule(i, "application", i - security) for i in range(security, rule_count)]
        return canonical.ordered(
            estate.Estate(
                workloads=tuple(self._workload(i) for i in range(count)),
                ip_lists=tuple(iplists.IpList(n, _nets(c), _nets(e)) for n, (c, e) in _IP_LISTS.items()),
                services=tuple(self.services.values()),
                rules=tuple(found),
                control_plane=(
                    estate.Endpoint(ipaddress.ip_network("10.76.0.1"), services.PortRange(8440, 8440)),
                ),
                quarantine_allow="forensics",
            )
        )

    def _workload(self, i: int) -> workloads.Workload:
        labelset = self.pool[i % len(self.pool)]
        name = f"{labelset['env']}-{labelset['role']}-{i:06d}"
        kind = workloads.WorkloadKind.UNMANAGED if i % 500 == 499 else _KINDS[i % len(_KINDS)]
        mode = workloads.Mode.ALERT if i % 10 == 3 else workloads.Mode.VISIBILITY if i % 50 == 7 else _ENFORCE
        return workloads.Workload(
            name,
            kind,
            (ipaddress.IPv4Network((FIRST_ADDRESS + i, 32)),),
            labelset,
            {"hostname": name, "os": "windows" if i % 25 == 0 else "linux"},
            mode,
        )

    def _rule(self, i: int, tier: str, index: int) -> rules.Rule:
        base = self.rnd.choice(self.pool)
        action = self._action(tier)
        roll = self.rnd.random()
        return rules.Rule(
            name=f"{tier[:3]}-{index:05d}",
            tier=tier,
            priority=(index + 1) * 10,
            action=action,
            sources=self._sources(tier, action),
            destinations=self._destinations(base),
            services=self._services(base["role"], tier),
            not_before=_WINDOW[0] if roll < 0.03 else None,
            not_after=_WINDOW[1] if roll < 0.03 else None,
            owner=base["team"],
            reason="synthetic" if roll > 0.9 else "",
            policy=f"{tier}-{index // 25:03d}",
            enabled=not 0.03 <= roll < 0.04,
        )

    def _action(self, tier: str) -> rules.Action:
        roll = self.rnd.random()
        if tier == "security":
            return (
                rules.Action.DENY if roll < 0.6 else rules.Action.PASS if roll < 0.8 else rules.Action.ALLOW
            )
        return rules.Action.DENY if roll < 0.05 else rules.Action.ALLOW

    def _sources(self, tier: str, action: rules.Action) -> tuple[selectors.Peer, ...]:
        roll = self.rnd.random()
        if roll < 0.06:
            return (selectors.IpListPeer(self.rnd.choice(sorted(_IP_LISTS))),)
        if roll < 0.10:
            third = self.rnd.randrange(256)
            cuts = (ipaddress.ip_network(f"10.210.{third}.0/28"),) if roll < 0.08 else ()
            return (selectors.CidrPeer((ipaddress.ip_network(f"10.210.{third}.0/24"),), cuts),)
        if roll < 0.12 and (tier == "security" or action is rules.Action.ALLOW):
            return (selectors.AnyPeer(),)
        first = self._selector(self.rnd.choice(self.pool))
        if roll > 0.9:  # two peers: either may match
            return (first, self._selector(self.rnd.choice(self.pool)))
        return (first,)

    def _destinations(self, base: labels.Labels) -> tuple[selectors.Peer, ...]:
        if self.rnd.random() < 0.03:
            return (selectors.IpListPeer("partners"),)
        return (self._selector(base),)

    def _selector(self, base: labels.Labels) -> selectors.Peer:
        """A selector derived from a real label set, so that it matches something."""
        req = selectors.Requirement
        op = selectors.Operator
        exprs: tuple[selectors.Requirement, ...]
        roll = self.rnd.random()
        if roll < 0.45:
            sel = selectors.LabelSelector.of({k: base[k] for k in ("env", "app", "role")})
        elif roll < 0.65:
            envs = (base["env"], self.rnd.choice(ENVS))
            sel = selectors.LabelSelector.of(
                {"app": base["app"], "role": base["role"]}, (req("env", op.IN, envs),)
            )
        elif roll < 0.80:
            loc = self.rnd.choice([x for x in LOCS if x != base["loc"]])
            exprs = (req("team", op.EXISTS), req("loc", op.NOT_IN, (loc,)))
            sel = selectors.LabelSelector.of({"env": base["env"], "role": base["role"]}, exprs)
        elif roll < 0.90:
            other_env = self.rnd.choice([e for e in ENVS if e != base["env"]])
            roles = (base["role"], self.rnd.choice(ROLES))
            exprs = (req("role", op.IN, roles), req("env", op.NOT_IN, (other_env,)))
            sel = selectors.LabelSelector.of({"app": base["app"]}, exprs)
        else:
            exprs = (req("quarantine", op.DOES_NOT_EXIST),)
            sel = selectors.LabelSelector.of({k: base[k] for k in ("env", "loc", "role")}, exprs)
        return selectors.SelectorPeer(sel)

    def _services(self, role: str, tier: str) -> tuple[services.Service, ...]:
        roll = self.rnd.random()
        if tier == "security" and roll < 0.3:
            return (services.ANY_SERVICE,)
        if roll < 0.05:  # an inline port, as `services: [{port: 7001}]` loads
            port = 7000 + self.rnd.randrange(100)
            spec = services.PortSpec(_TCP, (services.PortRange(port, port),))
            return (canonical.inline_service(spec),)
        names = _ROLE_SERVICES[role]
        picked = names if roll > 0.7 else (self.rnd.choice(names),)
        return tuple(self.services[n] for n in picked)


_KINDS = (
    *[workloads.WorkloadKind.VM] * 10,
    *[workloads.WorkloadKind.CONTAINER] * 5,
    *[workloads.WorkloadKind.POD] * 3,
    *[workloads.WorkloadKind.HOST] * 2,
)
_ENFORCE = workloads.Mode.ENFORCE


def _service(name: str) -> services.Service:
    ports, process, user = _SERVICES[name]
    specs = tuple(
        services.PortSpec(proto, () if first is None else (services.PortRange(first, last or first),))
        for proto, first, last in ports
    )
    return services.Service(name, specs, process, user)


def _nets(texts: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)
