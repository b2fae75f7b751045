"""The reference meaning of a document, as a truth table a reader can check by eye."""

from __future__ import annotations

import pytest

from microseg.model import addresses, estate, rules, services, workloads
from microseg.render import semantics
from tests.render.documents import ALLOW, ANY, DENY, ICMP, PASS, TCP, UDP, aset, document, entry, spec

SETS = (aset("clients", "10.77.1.0/24"), aset("admins", "10.77.5.5"), aset("vips", "10.77.250.0/28"))
DOC = document(
    ingress=(
        entry("security/admins-pass", PASS, spec(TCP, 22), peers=("admins",)),
        entry("security/no-ssh", DENY, spec(TCP, 22)),
        entry("security/no-udp-to-vip", DENY, spec(UDP), local=("vips",)),
        entry("application/ssh", ALLOW, spec(TCP, 22), peers=("admins",)),
        entry("application/web", ALLOW, spec(TCP, 80, (8000, 8100)), peers=("clients",)),
        entry("application/window", ALLOW, spec(TCP, 5432), not_before=1000, not_after=2000),
        entry("application/ping", ALLOW, spec(ICMP)),
    ),
    egress=(entry("application/anything", ALLOW, spec(ANY), peers=("clients",)),),
    sets=SETS,
    address=("10.77.250.2", "10.77.250.40"),
)
ME, ME_OUTSIDE_VIPS = "10.77.250.2", "10.77.250.40"

CASES: dict[str, tuple[semantics.Direction, str, str, services.Protocol, int | None, float, str]] = {
    "admin ssh passes security, application allows": (
        "ingress",
        "10.77.5.5",
        ME,
        TCP,
        22,
        0,
        "application/ssh",
    ),
    "other ssh is denied in security": ("ingress", "10.77.1.1", ME, TCP, 22, 0, "security/no-ssh"),
    "web from clients": ("ingress", "10.77.1.1", ME, TCP, 8050, 0, "application/web"),
    "web port outside the range": ("ingress", "10.77.1.1", ME, TCP, 8101, 0, "default"),
    "web from a stranger": ("ingress", "10.77.2.1", ME, TCP, 80, 0, "default"),
    "udp to a vip is denied": ("ingress", "10.77.1.1", ME, UDP, 53, 0, "security/no-udp-to-vip"),
    "udp to the other address is not": ("ingress", "10.77.1.1", ME_OUTSIDE_VIPS, UDP, 53, 0, "default"),
    "window: before": ("ingress", "10.77.2.1", ME, TCP, 5432, 999, "default"),
    "window: first second": ("ingress", "10.77.2.1", ME, TCP, 5432, 1000, "application/window"),
    "window: last moment": ("ingress", "10.77.2.1", ME, TCP, 5432, 1999.9, "application/window"),
    "window: end is exclusive": ("ingress", "10.77.2.1", ME, TCP, 5432, 2000, "default"),
    "icmp": ("ingress", "10.77.2.1", ME, ICMP, None, 0, "application/ping"),
    "egress any protocol to clients": ("egress", "10.77.1.9", ME, ANY, None, 0, "application/anything"),
    "egress tcp to clients": ("egress", "10.77.1.9", ME, TCP, 443, 0, "application/anything"),
    "egress elsewhere": ("egress", "10.77.3.9", ME, TCP, 443, 0, "default"),
    "control plane egress": ("egress", "10.77.250.9", ME, TCP, 8443, 0, "system/control-plane"),
    "control plane, other port": ("egress", "10.77.250.9", ME, TCP, 8444, 0, "default"),
    "control plane ingress only to its address": ("ingress", "10.77.3.3", ME, TCP, 8443, 0, "default"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(
    case: tuple[semantics.Direction, str, str, services.Protocol, int | None, float, str],
) -> None:
    direction, peer, local, protocol, port, at, ref = case
    flow = (addresses.address(peer), addresses.address(local), protocol, port, at)
    action, got = semantics.decide(DOC, direction, *flow)
    assert got == ref
    expected = rules.Action.DENY if ref == "default" or ref.startswith("security/no") else rules.Action.ALLOW
    assert action is expected


def test_ingress_control_plane_when_the_workload_holds_the_address() -> None:
    doc = document(address=("10.77.250.9",))
    flow = (addresses.address("10.77.3.3"), addresses.address("10.77.250.9"), TCP, 8443, 0)
    assert semantics.decide(doc, "ingress", *flow) == (rules.Action.ALLOW, "system/control-plane")


def test_any_protocol_endpoint_follows_the_engine() -> None:
    """Protocol any with a port range: ported protocols need the port, port-less ones pass."""
    ep = estate.Endpoint(addresses.network("10.77.250.9"), services.PortRange(8443, 8443), ANY)
    dst = addresses.address("10.77.250.9")
    assert semantics.control_plane_matches(ep, dst, UDP, 8443)
    assert not semantics.control_plane_matches(ep, dst, TCP, 80)
    assert semantics.control_plane_matches(ep, dst, ICMP, None)
    assert semantics.control_plane_matches(ep, dst, ANY, None)


OUTCOMES = {
    "enforce allow": (workloads.Mode.ENFORCE, ALLOW, ("accept", False)),
    "enforce deny": (workloads.Mode.ENFORCE, DENY, ("drop", True)),
    "alert deny": (workloads.Mode.ALERT, DENY, ("accept", True)),
    "alert allow": (workloads.Mode.ALERT, ALLOW, ("accept", False)),
    "visibility deny": (workloads.Mode.VISIBILITY, DENY, ("accept", False)),
}


@pytest.mark.parametrize("case", OUTCOMES.values(), ids=OUTCOMES.keys())
def test_outcome(case: tuple[workloads.Mode, rules.Action, tuple[str, bool]]) -> None:
    mode, action, expected = case
    assert semantics.outcome(mode, action) == expected
