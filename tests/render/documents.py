"""Hand-built ruleset documents: the golden scenarios and the lab's documents.

Each scenario is a document plus what the host knows (cgroups, uids) and render settings, so that
one golden file set exists per (document, host, settings). Addresses are in 10.77.0.0/16 so the
same documents can be loaded into the netns lab.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from microseg import settings as config
from microseg.model import addresses, estate, rules, ruleset, services, workloads

TCP, UDP, SCTP, ICMP, ANY = (
    services.Protocol.TCP,
    services.Protocol.UDP,
    services.Protocol.SCTP,
    services.Protocol.ICMP,
    services.Protocol.ANY,
)
ALLOW, DENY, PASS = rules.Action.ALLOW, rules.Action.DENY, rules.Action.PASS
GOLDEN_HASH = "sha256:" + "0" * 64
CONTROL_PLANE = estate.Endpoint(addresses.network("10.77.250.9"), services.PortRange(8443, 8443))


def spec(protocol: services.Protocol, *ports: int | tuple[int, int]) -> services.PortSpec:
    """A port spec from ports and (first, last) ranges."""
    ranges = tuple(services.PortRange(p, p) if isinstance(p, int) else services.PortRange(*p) for p in ports)
    return services.PortSpec(protocol, ranges)


def entry(
    ref: str,
    action: rules.Action,
    *ports: services.PortSpec,
    peers: tuple[str, ...] | None = None,
    local: tuple[str, ...] | None = None,
    **extra: object,
) -> ruleset.Entry:
    """An entry whose tier is the first part of `ref`."""
    return ruleset.Entry(ref, ref.partition("/")[0], action, peers, local, ports, **extra)  # type: ignore[arg-type]


def aset(name: str, *nets: str) -> ruleset.AddressSet:
    """An address set from CIDR strings."""
    return ruleset.AddressSet(name, tuple(addresses.network(n) for n in nets), f"set {name}")


def document(
    ingress: tuple[ruleset.Entry, ...] = (),
    egress: tuple[ruleset.Entry, ...] = (),
    sets: tuple[ruleset.AddressSet, ...] = (),
    *,
    mode: workloads.Mode = workloads.Mode.ENFORCE,
    workload: str = "web-1",
    address: tuple[str, ...] = ("10.77.250.2",),
    tiers: tuple[str, ...] = ("security", "application"),
    control_plane: tuple[estate.Endpoint, ...] = (CONTROL_PLANE,),
) -> ruleset.RulesetDocument:
    """A document with a fixed stand-in hash, so golden files do not follow the hash algorithm."""
    doc = ruleset.RulesetDocument(
        workload=workload,
        addresses=tuple(addresses.network(a) for a in address),
        mode=mode,
        policy_version="v7",
        tiers=tiers,
        control_plane=control_plane,
        address_sets=sets,
        ingress=ingress,
        egress=egress,
    )
    return replace(doc, hash=GOLDEN_HASH)


@dataclass(frozen=True)
class Scenario:
    """One golden case."""

    doc: ruleset.RulesetDocument
    cgroups: Mapping[str, str] = field(default_factory=dict)
    uids: Mapping[str, int] = field(default_factory=dict)
    settings: config.RenderSettings = field(default_factory=config.RenderSettings)


def _basic(mode: workloads.Mode) -> ruleset.RulesetDocument:
    sets = (
        aset("clients", "10.77.250.1", "10.77.1.0/24"),
        aset("dev", "10.77.9.0/24"),
        aset("dns", "10.77.0.53"),
    )
    return document(
        ingress=(
            entry("security/no-dev", DENY, spec(ANY), peers=("dev",)),
            entry("application/web", ALLOW, spec(TCP, 80, (8000, 8100)), peers=("clients",)),
        ),
        egress=(entry("application/dns", ALLOW, spec(UDP, 53), spec(TCP, 53), peers=("dns",)),),
        sets=sets,
        mode=mode,
    )


def _pass() -> ruleset.RulesetDocument:
    return document(
        ingress=(
            entry("security/trusted-ssh", PASS, spec(TCP, 22), peers=("admins",)),
            entry("security/no-ssh", DENY, spec(TCP, 22)),
            entry("application/ssh", ALLOW, spec(TCP, 22), peers=("admins",)),
        ),
        sets=(aset("admins", "10.77.5.0/28"),),
    )


def _time_window() -> ruleset.RulesetDocument:
    return document(
        ingress=(
            entry(
                "application/maintenance",
                ALLOW,
                spec(TCP, 5432),
                peers=("dba",),
                not_before=1767225600,
                not_after=1767312000,
            ),  # 2026-01-01, one day
            entry("application/from-2026", ALLOW, spec(TCP, 443), not_before=1767225600),
            entry("application/until-2026", ALLOW, spec(TCP, 444), not_after=1767225600),
        ),
        sets=(aset("dba", "10.77.7.7"),),
    )


def _ipv6() -> ruleset.RulesetDocument:
    return document(
        ingress=(entry("application/web", ALLOW, spec(TCP, 443), spec(ICMP), peers=("clients",)),),
        egress=(entry("application/api", ALLOW, spec(TCP, 8443), peers=("api",)),),
        sets=(aset("clients", "10.77.3.0/24", "fd00:77::/64", "fd00:78::5"), aset("api", "fd00:99::1")),
        address=("10.77.250.2", "fd00:77::2"),
        control_plane=(estate.Endpoint(addresses.network("fd00:77::9"), services.PortRange(8443, 8443)),),
    )


def _cidr_local() -> ruleset.RulesetDocument:
    return document(
        ingress=(
            entry("application/vip", ALLOW, spec(TCP, 80), peers=("lb",), local=("vips",)),
            entry("security/mgmt-only", DENY, spec(TCP, 22), local=("vips",)),
        ),
        egress=(entry("application/backups", ALLOW, spec(TCP, 873), peers=("backup",), local=("vips",)),),
        sets=(aset("lb", "10.77.8.0/29"), aset("vips", "10.77.250.0/28"), aset("backup", "10.77.6.0/24")),
    )


def _icmp() -> ruleset.RulesetDocument:
    return document(
        ingress=(
            entry("application/ping-any", ALLOW, spec(ICMP)),
            entry("application/ping-mon", ALLOW, spec(ICMP), peers=("monitoring",)),
        ),
        egress=(entry("security/no-icmp-out", DENY, spec(ICMP)),),
        sets=(aset("monitoring", "10.77.4.4"),),
    )


def _any_protocol() -> ruleset.RulesetDocument:
    return document(
        ingress=(entry("application/cluster", ALLOW, spec(ANY), peers=("cluster",)),),
        egress=(
            entry("security/no-exfil", DENY, spec(ANY), peers=("internet",)),
            entry("application/anything", ALLOW, spec(ANY)),
        ),
        sets=(aset("cluster", "10.77.10.0/24"), aset("internet", "0.0.0.0/0", "::/0")),
        control_plane=(
            estate.Endpoint(addresses.network("10.77.250.9"), services.PortRange(8443, 8443), ANY),
        ),
    )


def _process() -> ruleset.RulesetDocument:
    return document(
        ingress=(entry("application/db", ALLOW, spec(TCP, 3306), peers=("apps",), process="mysqld"),),
        egress=(
            entry(
                "application/replica",
                ALLOW,
                spec(TCP, 3306),
                peers=("replicas",),
                process="mysqld",
                user="mysql",
            ),
            entry("application/backup", ALLOW, spec(TCP, 22), peers=("replicas",), user="backup"),
        ),
        sets=(aset("apps", "10.77.20.0/24"), aset("replicas", "10.77.21.0/24")),
        workload="db-1",
    )


def _names() -> ruleset.RulesetDocument:
    tier = "a-tier-name-of-thirty-two-chars"
    return document(
        ingress=(entry(f"{tier}/allow", ALLOW, spec(TCP, *range(1000, 1020)), peers=("db.prod/primary",)),),
        sets=(aset("db.prod/primary", "10.77.30.1"), aset("9-lives", "10.77.31.0/24")),
        tiers=(tier, "application"),
    )


def _empty() -> ruleset.RulesetDocument:
    return document(tiers=(), control_plane=())


SCENARIOS: dict[str, Scenario] = {
    "enforce": Scenario(_basic(workloads.Mode.ENFORCE)),
    "alert": Scenario(_basic(workloads.Mode.ALERT)),
    "visibility": Scenario(_basic(workloads.Mode.VISIBILITY)),
    "rate-limited": Scenario(
        _basic(workloads.Mode.ENFORCE), settings=config.RenderSettings(log_rate_per_second=20)
    ),
    "pass": Scenario(_pass()),
    "time-window": Scenario(_time_window()),
    "ipv6": Scenario(_ipv6()),
    "cidr-local": Scenario(_cidr_local()),
    "icmp": Scenario(_icmp()),
    "any-protocol": Scenario(_any_protocol()),
    "process-cgroup": Scenario(
        _process(), cgroups={"mysqld": "system.slice/mysql.service"}, uids={"mysql": 106}
    ),
    "process-no-cgroup": Scenario(_process()),
    "long-names": Scenario(_names()),
    "empty": Scenario(_empty()),
}


def with_mode(doc: ruleset.RulesetDocument, mode: workloads.Mode) -> ruleset.RulesetDocument:
    """The same document in another mode."""
    return replace(doc, mode=mode)


# --- the netns lab: a (10.77.250.1) is the client, b (10.77.250.2) the server -----------------

LAB_TCP = (8080, 8081, 8082)
LAB_UDP = (9090, 9091)


def server_doc(
    mode: workloads.Mode = workloads.Mode.ENFORCE,
    clients: tuple[str, ...] = ("10.77.250.1",),
    retired: bool = True,
) -> ruleset.RulesetDocument:
    """b's ingress: 8081 and udp/9091 denied in security, 8080 and udp/9090 allowed to clients,
    8082 left to the default deny. `retired` adds a set that a later version drops."""
    sets = (aset("clients", *clients), *((aset("retired", "10.77.250.77"),) if retired else ()))
    return document(
        ingress=(
            entry("security/no-8081", DENY, spec(TCP, 8081)),
            entry("security/no-udp-9091", DENY, spec(UDP, 9091), peers=("clients",)),
            entry("application/web", ALLOW, spec(TCP, 8080, 8081), peers=("clients",)),
            entry("application/udp", ALLOW, spec(UDP, 9090, 9091), peers=("clients",)),
        ),
        sets=sets,
        mode=mode,
        workload="lab-b",
        control_plane=(),
    )


def client_doc(mode: workloads.Mode = workloads.Mode.ENFORCE) -> ruleset.RulesetDocument:
    """a's egress: udp/9091 denied in security, tcp/8080 and udp/9090 to the server allowed."""
    return document(
        egress=(
            entry("security/no-udp-9091", DENY, spec(UDP, 9091)),
            entry("application/to-web", ALLOW, spec(TCP, 8080), spec(UDP, 9090), peers=("servers",)),
        ),
        sets=(aset("servers", "10.77.250.2"),),
        mode=mode,
        workload="lab-a",
        address=("10.77.250.1",),
        control_plane=(),
    )
