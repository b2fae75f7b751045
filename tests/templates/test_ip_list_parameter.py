"""A template's `cidr` parameter takes an IP list's name too: the rule then names the list, which
comes from the estate the result is loaded with (and is refused where there is none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.engine import engine
from microseg.model import selectors, services
from tests.templates.test_templates import EXAMPLES, load_with, render, verdict


@pytest.mark.parametrize("template", ["three-tier", "api-gateway"])
def test_a_list_name_makes_a_rule_from_the_list(template: str) -> None:
    sets = {"app": "crm", "env": "prod"} if template == "three-tier" else {"env": "prod", "gateway": "gw"}
    made = catalog_render(template, **sets, clients="corp-users")
    first = made.estate.rules[0]
    assert first.sources == (selectors.IpListPeer("corp-users"),)
    assert made.estate.ip_lists == ()  # the list is the estate's, not the template's
    assert "ipList: corp-users" in made.yaml()


def catalog_render(template: str, **sets: str) -> object:
    if template == "three-tier":
        return render(template, **sets)
    return render(template, services="cart:9001", **sets)


def test_the_list_decides_with_the_estate_it_is_loaded_with(tmp_path: Path) -> None:
    made = render("three-tier", app="crm", env="prod", app_port="7001", db_port="5432", clients="corp-users")
    eng = engine.PolicyEngine(load_with(tmp_path, made))
    rule = "application/three-tier-crm-prod-clients-to-web"
    assert verdict(eng, "10.77.200.20", "prod-web-1", 443, services.Protocol.TCP) == ("allow", rule)
    assert verdict(eng, "192.0.2.1", "prod-web-1", 443) == ("deny", None)


def test_a_list_the_estate_lacks_is_refused_where_it_is_loaded(tmp_path: Path) -> None:
    made = render("three-tier", app="crm", env="prod", clients="office")
    with pytest.raises(errors.PolicyFileError) as caught:
        load_with(tmp_path, made)
    assert any("unknown ip list 'office'" in p.message for p in caught.value.problems)
    assert EXAMPLES.is_dir() and policyfile.load([EXAMPLES])


@pytest.mark.parametrize(
    ("clients", "says"),
    [("10.0.0", "'10.0.0' is not an IP address or CIDR"), ("off ice", "clients: not a CIDR, and IP list name 'off ice'"),
     ("team/office", "clients: not a CIDR, and IP list name 'team/office'")],
)  # fmt: skip
def test_neither_a_cidr_nor_a_name_is_a_user_error(clients: str, says: str) -> None:
    with pytest.raises(errors.UserError) as caught:
        render("three-tier", app="crm", env="prod", clients=clients)
    assert says in str(caught.value)
