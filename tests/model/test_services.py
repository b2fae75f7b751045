"""Services: port ranges, protocol/port matching truth table, process constraints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import services
from tests.model import strategies as gen

P = services.Protocol
R = services.PortRange
Spec = services.PortSpec
WEB = Spec(P.TCP, (R(80, 80), R(8000, 8100)))

# (spec, protocol, port, expected)
MATCH_TABLE = {
    "tcp/single-port": (WEB, P.TCP, 80, True),
    "tcp/range-low-edge": (WEB, P.TCP, 8000, True),
    "tcp/range-inside": (WEB, P.TCP, 8050, True),
    "tcp/range-high-edge": (WEB, P.TCP, 8100, True),
    "tcp/below-range": (WEB, P.TCP, 7999, False),
    "tcp/above-range": (WEB, P.TCP, 8101, False),
    "tcp/next-to-single-port": (WEB, P.TCP, 81, False),
    "tcp/no-port-given": (WEB, P.TCP, None, False),
    "udp-flow/tcp-spec": (WEB, P.UDP, 80, False),
    "sctp-flow/tcp-spec": (WEB, P.SCTP, 80, False),
    "udp/port": (Spec(P.UDP, (R(53, 53),)), P.UDP, 53, True),
    "tcp-flow/udp-spec": (Spec(P.UDP, (R(53, 53),)), P.TCP, 53, False),
    "tcp/all-ports": (Spec(P.TCP), P.TCP, 65535, True),
    "tcp/all-ports-no-port": (Spec(P.TCP), P.TCP, None, True),
    "tcp-all-ports/udp-flow": (Spec(P.TCP), P.UDP, 1, False),
    "icmp/ignores-port": (Spec(P.ICMP), P.ICMP, 8, True),
    "icmp/no-port": (Spec(P.ICMP), P.ICMP, None, True),
    "icmp/tcp-flow": (Spec(P.ICMP), P.TCP, 80, False),
    "any/tcp": (Spec(P.ANY), P.TCP, 22, True),
    "any/udp": (Spec(P.ANY), P.UDP, 53, True),
    "any/icmp": (Spec(P.ANY), P.ICMP, None, True),
    "any/sctp": (Spec(P.ANY), P.SCTP, 9, True),
}


@pytest.mark.parametrize(
    ("spec", "protocol", "port", "expected"), MATCH_TABLE.values(), ids=MATCH_TABLE.keys()
)
def test_port_spec_truth_table(
    spec: services.PortSpec, protocol: services.Protocol, port: int | None, expected: bool
) -> None:
    assert spec.matches(protocol, port) is expected
    assert services.Service("s", (spec,)).matches(protocol, port) is expected


@given(gen.port_specs(), st.sampled_from([P.TCP, P.UDP, P.SCTP, P.ICMP]), gen.ports)
def test_port_spec_matches_its_definition(
    spec: services.PortSpec, protocol: services.Protocol, port: int
) -> None:
    expected = spec.protocol is P.ANY or (
        spec.protocol is protocol and (not spec.ports or any(r.first <= port <= r.last for r in spec.ports))
    )
    assert spec.matches(protocol, port) is expected


def test_service_matches_when_any_spec_matches() -> None:
    dns = services.Service("dns", (Spec(P.UDP, (R(53, 53),)), Spec(P.TCP, (R(53, 53),))))
    assert dns.matches(P.UDP, 53) and dns.matches(P.TCP, 53)
    assert not dns.matches(P.TCP, 54) and not dns.matches(P.ICMP, None)


def test_any_service_matches_everything() -> None:
    for protocol in P:
        assert services.ANY_SERVICE.matches(protocol, None)
    assert services.ANY_SERVICE.matches(P.TCP, 1)
    assert str(services.ANY_SERVICE) == "any"


@pytest.mark.parametrize(
    ("first", "last"),
    [(0, 80), (80, 79), (1, 65536), (65536, 65536), (-1, 10), (0, 0)],
    ids=["zero", "reversed", "too-high", "both-too-high", "negative", "zero-zero"],
)
def test_invalid_port_ranges(first: int, last: int) -> None:
    with pytest.raises(ValidationError, match="1-65535"):
        R(first, last)


@pytest.mark.parametrize(
    ("first", "last"), [(1, 1), (65535, 65535), (1, 65535)], ids=["lowest", "highest", "all"]
)
def test_edge_port_ranges(first: int, last: int) -> None:
    r = R(first, last)
    assert first in r and last in r and (first - 1) not in r and (last + 1) not in r


@pytest.mark.parametrize("protocol", [P.ICMP, P.ANY], ids=str)
def test_protocols_without_ports_reject_ports(protocol: services.Protocol) -> None:
    with pytest.raises(ValidationError, match="has no ports") as info:
        Spec(protocol, (R(80, 80),))
    assert info.value.field == "ports"


def test_has_ports() -> None:
    assert [p.value for p in P if p.has_ports] == ["tcp", "udp", "sctp"]


def test_port_ranges_are_sorted_and_deduplicated() -> None:
    spec = Spec(P.TCP, (R(443, 443), R(80, 80), R(443, 443)))
    assert spec.ports == (R(80, 80), R(443, 443))
    assert spec == Spec(P.TCP, (R(80, 80), R(443, 443)))


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (WEB, "80/tcp,8000-8100/tcp"),
        (Spec(P.UDP), "udp/*"),
        (Spec(P.ICMP), "icmp/*"),
        (Spec(P.ANY), "any"),
    ],
    ids=["tcp-ranges", "udp-all", "icmp", "any"],
)
def test_port_spec_str(spec: services.PortSpec, text: str) -> None:
    assert str(spec) == text


def test_service_needs_a_spec() -> None:
    with pytest.raises(ValidationError, match="needs at least one") as info:
        services.Service("empty", ())
    assert info.value.field == "ports"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, False),
        ({"process": "nginx"}, True),
        ({"user": "www-data"}, True),
        ({"client_process": "curl"}, True),
        ({"client_user": "app"}, True),
    ],
    ids=["none", "process", "user", "client-process", "client-user"],
)
def test_has_process_constraint(kwargs: dict[str, str], expected: bool) -> None:
    svc = services.Service("s", (WEB,), **kwargs)
    assert svc.has_process_constraint is expected
    assert svc.matches(P.TCP, 80), "process constraints are not checked by port matching"


def test_service_str_mentions_the_process() -> None:
    assert str(services.Service("s", (Spec(P.TCP, (R(22, 22),)),), process="sshd")) == "22/tcp (process sshd)"
