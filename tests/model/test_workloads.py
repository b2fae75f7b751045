"""Workloads: address rules per kind, canonical addresses, quarantine, value semantics."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microseg.errors import ValidationError
from microseg.model import addresses, workloads
from microseg.model.labels import Labels
from tests.model import strategies as gen

Kind = workloads.WorkloadKind
MANAGED_KINDS = [Kind.HOST, Kind.VM, Kind.CONTAINER, Kind.POD]


def nets(*texts: str) -> tuple[addresses.Network, ...]:
    return tuple(addresses.network(t) for t in texts)


@pytest.mark.parametrize("kind", MANAGED_KINDS, ids=str)
@pytest.mark.parametrize(
    "cidr", ["10.0.0.0/24", "10.0.0.0/31", "2001:db8::/64"], ids=["v4-24", "v4-31", "v6-64"]
)
def test_managed_kinds_reject_cidrs(kind: workloads.WorkloadKind, cidr: str) -> None:
    with pytest.raises(ValidationError, match="only unmanaged workloads may have CIDRs") as info:
        workloads.Workload("w", kind, nets("10.0.0.9", cidr))
    assert info.value.field == "addresses"


@pytest.mark.parametrize("kind", MANAGED_KINDS, ids=str)
def test_managed_kinds_accept_host_addresses(kind: workloads.WorkloadKind) -> None:
    workload = workloads.Workload("w", kind, nets("10.0.0.9", "2001:db8::9"))
    assert workload.managed


def test_unmanaged_workloads_accept_cidrs() -> None:
    printer = workloads.Workload("printers", Kind.UNMANAGED, nets("10.9.0.0/16", "10.8.0.1", "2001:db8::/48"))
    assert not printer.managed
    assert [str(n) for n in printer.addresses] == ["10.8.0.1/32", "10.9.0.0/16", "2001:db8::/48"]


@pytest.mark.parametrize(
    ("name", "addrs", "field"),
    [("", ("10.0.0.1",), "name"), ("w", (), "addresses")],
    ids=["no-name", "no-addresses"],
)
def test_required_fields(name: str, addrs: tuple[str, ...], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        workloads.Workload(name, Kind.VM, nets(*addrs))
    assert info.value.field == field


def test_addresses_are_deduplicated_and_sorted_v4_first_numerically() -> None:
    workload = workloads.Workload(
        "w", Kind.VM, nets("2001:db8::1", "10.0.0.10", "10.0.0.9", "10.0.0.10", "::1", "9.255.255.255")
    )
    assert [str(n) for n in workload.addresses] == [
        "9.255.255.255/32",
        "10.0.0.9/32",
        "10.0.0.10/32",
        "::1/128",
        "2001:db8::1/128",
    ]


@given(st.lists(gen.host_networks, min_size=1, max_size=6), st.randoms())
def test_address_order_does_not_matter(addrs: list[addresses.Network], rnd: random.Random) -> None:
    shuffled = list(addrs)
    rnd.shuffle(shuffled)
    a = workloads.Workload("w", Kind.VM, tuple(addrs))
    b = workloads.Workload("w", Kind.VM, tuple(shuffled + addrs))
    assert a == b and hash(a) == hash(b)
    assert len(a.addresses) == len(set(addrs))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"quarantine": "true"}, True),
        ({"quarantine": "false"}, False),
        ({"quarantine": "True"}, False),
        ({"quarantine": ""}, False),
        ({"app": "web"}, False),
        ({}, False),
    ],
    ids=["true", "false", "capital-true", "empty", "other-label", "no-labels"],
)
def test_quarantined(labels: dict[str, str], expected: bool) -> None:
    workload = workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels(labels))
    assert workload.quarantined is expected


def test_with_labels_and_with_addresses_return_changed_copies() -> None:
    base = workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels({"app": "web"}), {"os": "linux"})
    relabelled = base.with_labels(Labels({"quarantine": "true"}))
    assert relabelled.quarantined and not base.quarantined
    assert relabelled.attributes == {"os": "linux"} and relabelled.name == "w"
    moved = base.with_addresses(nets("10.0.0.3", "10.0.0.2"))
    assert [str(n) for n in moved.addresses] == ["10.0.0.2/32", "10.0.0.3/32"]
    assert [str(n) for n in base.addresses] == ["10.0.0.1/32"]
    with pytest.raises(ValidationError):
        base.with_addresses(nets("10.0.0.0/24"))


def test_attributes_are_copied_and_sorted() -> None:
    given_attrs = {"os": "linux", "hostname": "web-1"}
    workload = workloads.Workload("w", Kind.VM, nets("10.0.0.1"), attributes=given_attrs)
    given_attrs["os"] = "windows"
    assert list(workload.attributes) == ["hostname", "os"]
    assert workload.attributes["os"] == "linux"


def test_equality_covers_every_field() -> None:
    base = workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "linux"})
    assert base == workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "linux"})
    others = [
        workloads.Workload("x", Kind.VM, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "linux"}),
        workloads.Workload("w", Kind.HOST, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "linux"}),
        workloads.Workload("w", Kind.VM, nets("10.0.0.2"), Labels({"a": "b"}), {"os": "linux"}),
        workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels({"a": "c"}), {"os": "linux"}),
        workloads.Workload("w", Kind.VM, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "bsd"}),
        workloads.Workload(
            "w", Kind.VM, nets("10.0.0.1"), Labels({"a": "b"}), {"os": "linux"}, workloads.Mode.ALERT
        ),
    ]
    assert all(o != base for o in others)


def test_defaults() -> None:
    workload = workloads.Workload("w", addresses=nets("10.0.0.1"))
    assert workload.kind is Kind.VM
    assert workload.mode is workloads.Mode.VISIBILITY
    assert not workload.mode_set
    assert workload.labels == Labels()
