"""Segmentation templates: every one loads (alone, with the example estate, with each other), the
engine gives the verdicts each promises, and bad parameters are clear errors before anything is
substituted."""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

import pytest

from microseg import errors, policyfile
from microseg.engine import engine, invariants
from microseg.model import estate, rules, selectors, services
from microseg.templates import catalog, expand

TCP, UDP, ICMP = services.Protocol.TCP, services.Protocol.UDP, services.Protocol.ICMP
EXAMPLES = Path(str(resources.files("microseg") / "examples" / "estate"))
DOCS = Path(__file__).parents[2] / "docs" / "templates.md"

# Values unlike the examples, so that every parameter is substituted somewhere it shows.
CUSTOM = {
    "three-tier": {"app": "hr", "env": "staging", "db_port": "5432", "clients": "10.77.200.0/24",
                   "web_role": "front", "priority": "2100"},
    "api-gateway": {"env": "staging", "gateway": "kong", "services": "cart:9001,search", "service_port": "9002",
                    "ingress_port": "8443", "priority": "4100"},
    "database-per-service": {"env": "staging", "services": "cart:5432,search", "db_port": "27017",
                             "priority": "3100"},
    "shared-services": {"env": "staging", "shared_env": "infra", "ldap_role": "directory",
                        "metrics_port": "9273", "priority": "1100"},
    "env-separation": {"dev_env": "staging", "prod_env": "prod", "priority": "1100"},
    "risky-ports": {"env": "staging", "priority": "2100"},
}  # fmt: skip

# Workloads the example estate lacks: LDAP and backup servers, an API gateway and two services
# with their own databases (`*-db-*` hostnames get role=db from the estate's label rule).
EXTRA_WORKLOADS = """
    apiVersion: microseg.io/v1
    kind: List
    items:
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: ldap-1, labels: {env: shared, role: ldap}},
         spec: {addresses: [10.77.3.89]}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: backup-1, labels: {env: shared, role: backup}},
         spec: {addresses: [10.77.3.91]}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: apigw-1, labels: {env: prod, app: apigw}},
         spec: {addresses: [10.77.5.10]}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: orders-app-1, labels: {env: prod, app: orders, role: app}},
         spec: {addresses: [10.77.5.21]}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: orders-db-1, labels: {env: prod, app: orders}},
         spec: {addresses: [10.77.5.31], attributes: {os: linux}}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: payments-app-1, labels: {env: prod, app: payments, role: app}},
         spec: {addresses: [10.77.5.22]}}
      - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: payments-db-1, labels: {env: prod, app: payments}},
         spec: {addresses: [10.77.5.32], attributes: {os: linux}}}
"""


def render(name: str, **sets: str) -> catalog.Rendered:
    return catalog.get(name).render(sets)


def load_with(
    tmp_path: Path, *made: catalog.Rendered, extra: str = "", examples: bool = True
) -> estate.Estate:
    """The example estate (unless not), the rendered templates as files, and `extra` documents."""
    files: list[Path] = [EXAMPLES] if examples else []
    for i, r in enumerate(made):
        files.append(tmp_path / f"template-{i}.yaml")
        files[-1].write_text(r.yaml(), encoding="utf-8")
    if extra:
        files.append(tmp_path / "extra.yaml")
        files[-1].write_text(textwrap.dedent(extra), encoding="utf-8")
    return policyfile.load(files)


def without_policies(est: estate.Estate, *names: str) -> estate.Estate:
    """The estate without some of its own policies, so that the template's rules are what decide."""
    return est.with_rules(tuple(r for r in est.rules if r.policy not in names))


def verdict(eng: engine.PolicyEngine, src: str, dst: str, port: int | None, proto: services.Protocol = TCP
            ) -> tuple[str, str | None]:  # fmt: skip
    v = eng.evaluate(eng.endpoint(src), eng.endpoint(dst), port, proto)
    return v.decision.value, v.rule


def allow_policy(name: str, src: str, dst: str, ports: list[int], *, tier: str = "application",
                 priority: int = 900) -> str:  # fmt: skip
    inline = ", ".join(f"{{port: {p}}}" for p in ports)
    return f"""
        ---
        apiVersion: microseg.io/v1
        kind: Policy
        metadata: {{name: {name}}}
        spec:
          tier: {tier}
          rules:
            - {{name: {name}, priority: {priority}, action: allow, from: [{{selector: "{src}"}}],
                to: [{{selector: "{dst}"}}], services: [{inline}]}}
        """


# --- every template loads ----------------------------------------------------------------------


def test_the_catalog_holds_the_six_templates_of_the_issue() -> None:
    assert catalog.names() == [
        "api-gateway", "database-per-service", "env-separation", "risky-ports", "shared-services", "three-tier",
    ]  # fmt: skip
    assert set(CUSTOM) == set(catalog.names())


@pytest.mark.parametrize("name", catalog.names())
def test_examples_and_defaults_load_alone_and_with_the_example_estate(name: str, tmp_path: Path) -> None:
    made = catalog.get(name).example()
    alone = policyfile.load_text(made.yaml(), name)
    assert alone.rules and alone == made.estate
    together = load_with(tmp_path, made)
    assert set(alone.rules) <= set(together.rules)


@pytest.mark.parametrize("name", catalog.names())
def test_custom_parameters_load_with_the_example_estate_and_show_in_the_rules(
    name: str, tmp_path: Path
) -> None:
    made = render(name, **CUSTOM[name])
    est = load_with(tmp_path, made)
    text = made.yaml()
    for key, value in CUSTOM[name].items():
        if key != "priority":
            assert value.split(":")[0].split(",")[0] in text, key
    first = min(r.priority for r in made.estate.rules)
    assert first == int(CUSTOM[name]["priority"])
    assert {r.ref for r in made.estate.rules} <= {r.ref for r in est.rules}


def test_all_templates_together_with_the_example_estate_load_their_bands_do_not_clash(tmp_path: Path) -> None:
    made = [catalog.get(name).example() for name in catalog.names()]
    est = load_with(tmp_path, *made)
    assert sum(len(m.estate.rules) for m in made) + len(policyfile.load([EXAMPLES]).rules) == len(est.rules)
    assert invariants.Guard(engine.PolicyEngine(est)).check() == []


@pytest.mark.parametrize("name", catalog.names())
def test_each_instance_stays_in_its_band_and_tier_and_never_allows_any_to_any(name: str) -> None:
    template = catalog.get(name)
    made = template.example()
    (band,) = template.bands
    for rule in made.estate.rules:
        assert rule.tier == band.tier
        assert band.first <= rule.priority < band.first + 100 <= band.last + 1, rule.ref
        assert rule.action is (rules.Action.DENY if band.tier == "security" else rules.Action.ALLOW)
        if rule.action is rules.Action.ALLOW:
            assert not (rule.any_source and rule.any_destination), rule.ref
            assert all(s.name != "any" for s in rule.services), rule.ref
            assert not any(isinstance(p, selectors.AnyPeer) for p in rule.destinations), rule.ref


def test_applying_a_template_twice_with_other_values_does_not_collide(tmp_path: Path) -> None:
    crm = render("three-tier", app="crm", env="prod")
    hr = render("three-tier", app="hr", env="prod", priority="2100")
    est = load_with(tmp_path, crm, hr)
    names = {r.policy for r in est.rules}
    assert {"three-tier-crm-prod", "three-tier-hr-prod"} <= names


def test_the_same_priority_twice_is_fine_while_the_order_cannot_change_an_outcome(tmp_path: Path) -> None:
    est = load_with(
        tmp_path, render("three-tier", app="crm", env="prod"), render("three-tier", app="hr", env="prod")
    )
    assert sum(r.priority == 2000 for r in est.rules) == 2


def test_the_same_priority_with_another_action_on_shared_flows_is_reported_with_file_and_line(
    tmp_path: Path,
) -> None:
    rdp = allow_policy("jump-rdp", "role=jump", "env=prod", [3389], tier="security", priority=2010)
    with pytest.raises(errors.PolicyFileError) as caught:
        load_with(tmp_path, render("risky-ports", env="prod"), extra=rdp)
    problem = next(p for p in caught.value.problems if p.file.endswith("extra.yaml"))
    assert problem.field == "spec.rules[0].priority"
    assert "rule jump-rdp (allow) and rule risky-ports-prod-rdp (deny, " in problem.message


# --- verdicts ------------------------------------------------------------------------------------


def test_three_tier_opens_web_to_app_to_db_on_their_ports_and_nothing_else(tmp_path: Path) -> None:
    # Ports the example estate does not open, so the template's rules are what decide.
    made = render(
        "three-tier", app="crm", env="prod", app_port="7001", db_port="5432", clients="10.77.200.0/24"
    )
    eng = engine.PolicyEngine(load_with(tmp_path, made))
    rule = "application/three-tier-crm-prod-"
    assert verdict(eng, "10.77.200.20", "prod-web-1", 443) == ("allow", rule + "clients-to-web")
    assert verdict(eng, "192.0.2.1", "prod-web-1", 443) == ("deny", None)
    assert verdict(eng, "prod-web-1", "prod-app-1", 7001) == ("allow", rule + "web-to-app")
    assert verdict(eng, "prod-web-2", "prod-app-2", 7001) == ("allow", rule + "web-to-app")
    assert verdict(eng, "prod-app-1", "prod-db-1", 5432) == ("allow", rule + "app-to-db")
    assert verdict(eng, "prod-web-1", "prod-db-1", 5432) == ("deny", None)
    assert verdict(eng, "prod-web-1", "prod-app-1", 5432) == ("deny", None)
    assert verdict(eng, "prod-db-1", "prod-app-1", 7001) == ("deny", None)
    assert verdict(eng, "dev-app-1", "dev-db-1", 5432) == ("deny", None)  # another env


def test_three_tier_with_its_defaults_allows_the_crm_path(tmp_path: Path) -> None:
    est = without_policies(load_with(tmp_path, render("three-tier", app="crm", env="prod")), "crm-prod")
    eng = engine.PolicyEngine(est)
    assert verdict(eng, "prod-web-1", "prod-app-1", 8443) == (
        "allow",
        "application/three-tier-crm-prod-web-to-app",
    )
    assert verdict(eng, "prod-app-1", "prod-db-1", 3306) == (
        "allow",
        "application/three-tier-crm-prod-app-to-db",
    )
    assert verdict(eng, "prod-web-1", "prod-db-1", 3306) == ("deny", None)


@pytest.mark.parametrize(
    ("port", "proto", "rule"),
    [
        (445, TCP, "security/risky-ports-prod-smb"),
        (139, TCP, "security/risky-ports-prod-smb"),
        (3389, TCP, "security/risky-ports-prod-rdp"),
        (3389, UDP, "security/risky-ports-prod-rdp"),
        (23, TCP, "security/risky-ports-prod-telnet"),
    ],
    ids=["smb", "netbios-session", "rdp-tcp", "rdp-udp", "telnet"],
)
def test_risky_ports_deny_beats_an_application_allow(
    port: int, proto: services.Protocol, rule: str, tmp_path: Path
) -> None:
    oops = allow_policy("oops", "env=prod,role=web", "env=prod,role=app", [445, 139, 3389, 23])
    oops += """
            - {name: oops-udp, priority: 901, action: allow, from: [{selector: "env=prod,role=web"}],
                to: [{selector: "env=prod,role=app"}], services: [{port: 3389, protocol: udp}]}
        """
    before = engine.PolicyEngine(load_with(tmp_path, extra=oops))
    assert verdict(before, "prod-web-1", "prod-app-1", port, proto)[0] == "allow"
    after = engine.PolicyEngine(load_with(tmp_path, render("risky-ports", env="prod"), extra=oops))
    assert verdict(after, "prod-web-1", "prod-app-1", port, proto) == ("deny", rule)
    assert verdict(after, "10.77.200.20", "prod-app-1", port, proto) == ("deny", rule)
    # Other ports and other environments are untouched.
    assert verdict(after, "prod-web-1", "prod-app-1", 8443)[0] == "allow"
    assert verdict(after, "dev-web-1", "dev-app-1", 8443)[0] == "allow"


def test_env_separation_denies_dev_to_prod_in_the_security_tier_and_its_invariants_hold(
    tmp_path: Path,
) -> None:
    oops = allow_policy("oops", "env=dev,role=app", "env=prod,role=db", [3306])
    est = load_with(tmp_path, render("env-separation"), extra=oops)
    assert invariants.Guard(engine.PolicyEngine(est)).check() == []
    # Without the example estate's own guard rail, the template's is what decides.
    eng = engine.PolicyEngine(without_policies(est, "env-separation"))
    assert verdict(eng, "dev-app-1", "prod-db-1", 3306) == ("deny", "security/env-separation-dev-to-prod")
    assert verdict(eng, "dev-web-1", "prod-web-1", 443) == ("deny", "security/env-separation-dev-to-prod")
    assert verdict(eng, "prod-app-1", "dev-db-1", 3306) == ("deny", "security/env-separation-prod-to-dev")
    assert verdict(eng, "prod-web-1", "prod-app-1", 8443)[0] == "allow"
    guard = invariants.Guard(eng)
    assert {"env-separation-dev-never-reaches-prod", "env-separation-prod-never-reaches-dev"} <= {
        i.name for i in guard.declared
    }
    assert guard.check() == []


def test_env_separation_invariant_catches_a_hole_before_the_guard_rail(tmp_path: Path) -> None:
    hole = allow_policy("hole", "env=staging", "env=prod,role=db", [3306], tier="security", priority=900)
    hole += """
        ---
        apiVersion: microseg.io/v1
        kind: Workload
        metadata: {name: staging-app-1, labels: {env: staging, app: crm, role: app}}
        spec: {addresses: [10.77.6.21]}
        """
    est = load_with(tmp_path, render("env-separation", dev_env="staging"), extra=hole)
    found = invariants.Guard(engine.PolicyEngine(est)).check()
    assert {v.invariant for v in found} == {"env-separation-staging-never-reaches-prod"}


def test_shared_services_reach_every_workload_of_the_env_and_nothing_more(tmp_path: Path) -> None:
    prod, dev = render("shared-services", env="prod"), render("shared-services", env="dev", priority="1100")
    est = without_policies(load_with(tmp_path, prod, dev, extra=EXTRA_WORKLOADS), "shared-services")
    eng = engine.PolicyEngine(est)
    for env in ("prod", "dev"):
        rule = f"application/shared-services-{env}-"
        members = [w.name for w in est.workloads if w.labels.get("env") == env]
        assert members
        for name in members:
            assert verdict(eng, name, "dns-1", 53, UDP) == ("allow", rule + "to-dns"), name
            assert verdict(eng, name, "dns-1", 53, TCP) == ("allow", rule + "to-dns"), name
            assert verdict(eng, name, "ntp-1", 123, UDP) == ("allow", rule + "to-ntp"), name
            assert verdict(eng, name, "ldap-1", 389) == ("allow", rule + "to-ldap"), name
            assert verdict(eng, name, "ldap-1", 636) == ("allow", rule + "to-ldap"), name
            assert verdict(eng, "prometheus-1", name, 9100) == ("allow", rule + "monitoring-scrapes"), name
            assert verdict(eng, "prometheus-1", name, None, ICMP) == ("allow", rule + "monitoring-scrapes")
            assert verdict(eng, "backup-1", name, 9102) == ("allow", rule + "backup-reaches"), name
            assert verdict(eng, name, "dns-1", 22) == ("deny", None)
            assert verdict(eng, name, "ldap-1", 53, UDP) == ("deny", None)
            assert verdict(eng, "prometheus-1", name, 9102) == ("deny", None)
    assert verdict(eng, "dns-1", "ntp-1", 123, UDP) == ("deny", None)  # shared_env is not env
    assert invariants.Guard(eng).check() == []


def test_database_per_service_lets_each_app_reach_only_its_own_database(tmp_path: Path) -> None:
    made = render("database-per-service", env="prod", services="orders,payments:5432")
    eng = engine.PolicyEngine(load_with(tmp_path, made, extra=EXTRA_WORKLOADS))
    rule = "application/database-per-service-prod-"
    assert verdict(eng, "orders-app-1", "orders-db-1", 3306) == ("allow", rule + "orders-app-to-db")
    assert verdict(eng, "payments-app-1", "payments-db-1", 5432) == ("allow", rule + "payments-app-to-db")
    assert verdict(eng, "orders-app-1", "payments-db-1", 5432) == ("deny", None)
    assert verdict(eng, "payments-app-1", "orders-db-1", 3306) == ("deny", None)
    assert verdict(eng, "orders-app-1", "orders-db-1", 5432) == ("deny", None)
    assert verdict(eng, "orders-db-1", "orders-app-1", 3306) == ("deny", None)


def test_api_gateway_reaches_each_service_on_its_port_and_services_do_not_reach_each_other(
    tmp_path: Path,
) -> None:
    made = render("api-gateway", env="prod", gateway="apigw", services="orders:8080,payments:8081")
    eng = engine.PolicyEngine(load_with(tmp_path, made, extra=EXTRA_WORKLOADS))
    rule = "application/api-gateway-apigw-prod-"
    assert verdict(eng, "10.77.200.20", "apigw-1", 443) == ("allow", rule + "clients-to-gateway")
    assert verdict(eng, "apigw-1", "orders-app-1", 8080) == ("allow", rule + "to-orders")
    assert verdict(eng, "apigw-1", "payments-app-1", 8081) == ("allow", rule + "to-payments")
    assert verdict(eng, "apigw-1", "orders-app-1", 8081) == ("deny", None)
    assert verdict(eng, "orders-app-1", "payments-app-1", 8081) == ("deny", None)
    assert verdict(eng, "payments-app-1", "orders-app-1", 8080) == ("deny", None)
    assert verdict(eng, "10.77.200.20", "orders-app-1", 8080) == ("deny", None)


# --- bad parameters ------------------------------------------------------------------------------

BAD = [
    ("unknown key", "three-tier", {"app": "crm", "env": "prod", "ap": "x"}, ["unknown parameter 'ap'", "did you mean 'app'", "known parameters: app, env"]),
    ("missing required", "three-tier", {"app": "crm"}, ["missing required parameter 'env'", "known parameters: app, env, web_role=web"]),
    ("selector injection", "three-tier", {"app": "crm,role=db", "env": "prod"}, ["label app='crm,role=db': value must be empty or"]),
    ("placeholder injection", "three-tier", {"app": "${env}", "env": "prod"}, ["label app='${env}'"]),
    ("space", "risky-ports", {"env": "prod dev"}, ["label env='prod dev'"]),
    ("uppercase", "risky-ports", {"env": "Prod"}, ["env='Prod': must be lowercase"]),
    ("empty", "risky-ports", {"env": ""}, ["env: needs a value"]),
    ("port zero", "three-tier", {"app": "crm", "env": "prod", "db_port": "0"}, ["db_port=0: must lie within 1-65535"]),
    ("port text", "three-tier", {"app": "crm", "env": "prod", "db_port": "mysql"}, ["db_port='mysql': expected a number"]),
    ("negative priority", "risky-ports", {"env": "prod", "priority": "-5"}, ["priority='-5': expected a number"]),
    ("bad cidr", "three-tier", {"app": "crm", "env": "prod", "clients": "10.0.0.300/8"}, ["'10.0.0.300/8' is not an IP address or CIDR"]),
    ("service twice", "api-gateway", {"env": "prod", "gateway": "gw", "services": "a:1,a:2"}, ["services: 'a' is listed twice"]),
    ("service port", "api-gateway", {"env": "prod", "gateway": "gw", "services": "a:99999"}, ["services[0]=99999: must lie within"]),
    ("empty service", "database-per-service", {"env": "prod", "services": "a,,b"}, ["services[1]: needs a value"]),
    ("same env twice", "env-separation", {"dev_env": "prod"}, ["dev_env and prod_env must differ"]),
    ("name too long", "three-tier", {"app": "a" * 50, "env": "prod"}, ["does not make a valid policy", "rule name"]),
    ("several at once", "three-tier", {"app": "CRM", "db_port": "0"}, ["3 problems", "app='CRM'", "db_port=0", "'env'"]),
]  # fmt: skip


@pytest.mark.parametrize(("template", "sets", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_parameters_are_user_errors_naming_the_parameter(template: str, sets: dict[str, str],
                                                             says: list[str]) -> None:  # fmt: skip
    with pytest.raises(errors.UserError) as caught:
        catalog.get(template).render(sets)
    for fragment in says:
        assert fragment in str(caught.value)


def test_an_unknown_template_names_the_known_ones() -> None:
    with pytest.raises(
        errors.UserError, match=r"unknown template 'three-teir' \(did you mean 'three-tier'\?"
    ):
        catalog.get("three-teir")


# --- substitution --------------------------------------------------------------------------------


def test_substitution_is_typed_whole_and_interpolated_inside_text() -> None:
    scope = {"env": "prod", "port": 5432, "priority": 100}
    node = {
        "port": "${port}",
        "p": "${priority + 10}",
        "sel": "env=${env},role=db",
        "keep": 7,
        "${env}": "key",
    }
    assert expand.expand(node, scope) == {
        "port": 5432,
        "p": 110,
        "sel": "env=prod,role=db",
        "keep": 7,
        "${env}": "key",
    }


def test_each_unrolls_one_copy_per_item() -> None:
    scope = {
        "services": [{"name": "a", "port": 1, "index": 0}, {"name": "b", "port": 2, "index": 1}],
        "base": 10,
    }
    node = [
        {"first": True},
        {"$each": "services", "as": "s", "do": {"n": "x-${s.name}", "p": "${base+s.index}"}},
    ]
    assert expand.expand(node, scope) == [{"first": True}, {"n": "x-a", "p": 10}, {"n": "x-b", "p": 11}]


def test_a_replacement_is_never_expanded_again() -> None:
    assert expand.expand("a-${x}", {"x": "${y}", "y": "no"}) == "a-${y}"


@pytest.mark.parametrize(
    ("node", "says"),
    [("${nope}", "unknown parameter 'nope'"), ("${env.name}", "has no field"), ("${env+1}", "not a number"),
     ("${a b}", "not a parameter reference"), ([{"$each": "env", "as": "x", "do": 1}], "not a list")],
)  # fmt: skip
def test_a_broken_template_is_a_permanent_error(node: object, says: str) -> None:
    with pytest.raises(errors.PermanentError, match=says):
        expand.expand(node, {"env": "prod"})


def test_the_docs_describe_every_template_and_its_band() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in catalog.names():
        template = catalog.get(name)
        assert f"## {name}" in text, name
        for band in template.bands:
            assert f"{band.tier} {band.first}-{band.last}" in text, name
        for p in template.parameters:
            assert f"`{p.name}`" in text, (name, p.name)
