"""The example estate shipped in the package loads, and holds what the documentation promises: a
three-tier CRM in prod and dev, shared DNS and NTP, monitoring, a bastion, a legacy device, the
guard rails, and the settings that keep the data plane safe."""

from __future__ import annotations

import collections
import ipaddress

import pytest

from microseg import policyfile
from microseg.model import estate, labelrules, rules, selectors, services, workloads
from tests.policyfile import texts

LAB = ipaddress.ip_network("10.77.0.0/16")
TCP, UDP = services.Protocol.TCP, services.Protocol.UDP


@pytest.fixture(scope="module")
def est() -> estate.Estate:
    return policyfile.load([texts.examples()])


def roles(est: estate.Estate, env: str) -> collections.Counter[str]:
    """How many workloads of each role an environment has (labels derived by label rules count)."""
    found = (labelrules.effective_labels(w, est.label_rules) for w in est.workloads)
    return collections.Counter(labels["role"] for labels in found if labels.get("env") == env)


def rule(est: estate.Estate, name: str) -> rules.Rule:
    return next(r for r in est.rules if r.name == name)


def service(est: estate.Estate, name: str) -> services.Service:
    return next(s for s in est.services if s.name == name)


def test_crm_has_three_tiers_in_prod_and_a_smaller_dev(est: estate.Estate) -> None:
    assert roles(est, "prod") == {"lb": 1, "web": 2, "app": 2, "db": 1, "cache": 1, "billing": 1}
    assert roles(est, "dev") == {"web": 1, "app": 1, "db": 1}


def test_databases_get_their_role_from_the_hostname(est: estate.Estate) -> None:
    db_rule = next(r for r in est.label_rules if dict(r.labels) == {"role": "db"})
    assert db_rule.hostname_glob == "*-db-*"
    assert all("role" not in w.labels for w in est.workloads if "-db-" in w.name)


def test_every_address_is_in_the_lab_range(est: estate.Estate) -> None:
    nets = [n for w in est.workloads for n in w.addresses]
    nets += [n for i in est.ip_lists for n in (*i.cidrs, *i.excepts)]
    nets += [e.network for e in est.control_plane]
    assert nets and all(n.subnet_of(LAB) for n in nets)  # type: ignore[arg-type]


def test_legacy_billing_is_unmanaged_and_reached_by_prod_app_only(est: estate.Estate) -> None:
    billing = est.workload("legacy-billing")
    assert billing is not None and billing.kind is workloads.WorkloadKind.UNMANAGED
    assert billing.addresses == (ipaddress.ip_network("10.77.9.50/32"),)
    to_billing = rule(est, "prod-app-to-billing")
    assert str(to_billing.sources[0]) == "{app=crm,env=prod,role=app}"
    assert to_billing.services[0].matches(TCP, 5000)


def test_corp_users_reach_the_prod_load_balancer_on_https(est: estate.Estate) -> None:
    corp = next(i for i in est.ip_lists if i.name == "corp-users")
    assert corp.cidrs == (ipaddress.ip_network("10.77.200.0/24"),)
    users = rule(est, "users-to-prod-lb")
    assert users.sources == (selectors.IpListPeer("corp-users"),)
    assert str(users.destinations[0]) == "{app=crm,env=prod,role=lb}" and users.services[0].matches(TCP, 443)


def test_settings_keep_the_control_plane_and_forensics_open(est: estate.Estate) -> None:
    assert [str(e) for e in est.control_plane] == ["10.77.0.1/32 8440/tcp"]
    assert est.quarantine_allow == "forensics" and any(i.name == "forensics" for i in est.ip_lists)


def test_guard_rails_separate_dev_and_prod_in_the_security_tier(est: estate.Estate) -> None:
    guards = [r for r in est.rules if r.policy == "env-separation"]
    shown = {(str(r.sources[0]), str(r.destinations[0])) for r in guards}
    assert shown == {("{env=dev}", "{env=prod}"), ("{env=prod}", "{env=dev}")}
    assert all(
        r.tier == "security" and r.action is rules.Action.DENY and r.services == (services.ANY_SERVICE,)
        for r in guards
    )


def test_application_rules_are_in_the_application_tier_and_allow(est: estate.Estate) -> None:
    others = [r for r in est.rules if r.policy != "env-separation"]
    assert others and all(r.tier == "application" and r.action is rules.Action.ALLOW for r in others)


@pytest.mark.parametrize(
    ("name", "protocol", "port"),
    [("dns", UDP, 53), ("dns", TCP, 53), ("ntp", UDP, 123), ("node-exporter", TCP, 9100), ("ssh", TCP, 22),
     ("mysql", TCP, 3306)],
    ids=["dns-udp", "dns-tcp", "ntp", "node-exporter", "ssh", "mysql"],
)  # fmt: skip
def test_shared_services_have_their_ports(
    est: estate.Estate, name: str, protocol: services.Protocol, port: int
) -> None:
    assert service(est, name).matches(protocol, port)


def test_mysql_is_served_by_mysqld(est: estate.Estate) -> None:
    assert (service(est, "mysql").process, service(est, "mysql").user) == ("mysqld", "mysql")


def test_shared_rules_reach_everyone(est: estate.Estate) -> None:
    everyone = [labelrules.effective_labels(w, est.label_rules) for w in est.workloads]
    for name in ("everyone-to-ntp", "prometheus-scrapes-everything"):
        side = rule(est, name).destinations if name.startswith("prometheus") else rule(est, name).sources
        peer = side[0]
        assert isinstance(peer, selectors.SelectorPeer)
        assert all(peer.selector.matches(labels) for labels in everyone), name
