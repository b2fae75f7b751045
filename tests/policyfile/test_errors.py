"""Every kind of mistake in a policy file is reported with its file, line and field path, in words a
person can act on; every problem of every file comes at once; and nothing loads while any is left.

The truth tables start from one valid estate (BASE) and change one thing each. The expected line is
the line of the change (or of `at`, a piece of the changed text), so the tables stay readable.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from microseg import errors, policyfile
from tests.policyfile import texts

BASE = textwrap.dedent("""\
    apiVersion: microseg.io/v1
    kind: Workload
    metadata: {name: web-1, labels: {env: prod, role: web}}
    spec: {kind: vm, addresses: [10.77.1.11], mode: enforce}
    ---
    apiVersion: microseg.io/v1
    kind: Workload
    metadata: {name: db-1, labels: {env: prod}}
    spec:
      kind: host
      addresses: [10.77.1.31]
      attributes: {hostname: prod-db-1, os: linux}
    ---
    apiVersion: microseg.io/v1
    kind: IPList
    metadata: {name: corp}
    spec: {cidrs: [10.77.200.0/24], except: [10.77.200.0/28]}
    ---
    apiVersion: microseg.io/v1
    kind: Service
    metadata: {name: mysql}
    spec:
      ports: [{port: 3306}]
      process: mysqld
    ---
    apiVersion: microseg.io/v1
    kind: Service
    metadata: {name: http}
    spec: {ports: [{port: 8000, endPort: 8100, protocol: tcp}, {protocol: icmp}]}
    ---
    apiVersion: microseg.io/v1
    kind: Tier
    metadata: {name: platform}
    spec: {order: 250}
    ---
    apiVersion: microseg.io/v1
    kind: LabelRule
    metadata: {name: db-by-name}
    spec:
      match: {hostname: "*-db-*", hostnameRegex: "prod-.*", os: linux}
      labels: {role: db}
    ---
    apiVersion: microseg.io/v1
    kind: Policy
    metadata: {name: crm}
    spec:
      tier: application
      owner: team-crm
      rules:
        - name: web-to-db
          priority: 100
          action: allow
          from: [{selector: "env=prod,role=web"}]
          to: [{selector: {matchLabels: {env: prod, role: db}, matchExpressions: [{key: tier, operator: DoesNotExist}]}}]
          services: [mysql, {port: 8443}]
          notBefore: 2026-01-01T00:00:00Z
          notAfter: 2026-12-31T00:00:00Z
        - name: corp-to-web
          priority: 110
          action: allow
          from: [{ipList: corp}, {cidr: 10.77.0.0/16, except: [10.77.9.0/24]}]
          to: any
          services: any
    ---
    apiVersion: microseg.io/v1
    kind: Settings
    spec:
      controlPlane: [{address: 10.77.0.1, port: 8440, protocol: tcp}]
      quarantineAllow: corp
    """)  # fmt: skip


def changed(old: str, new: str) -> tuple[str, int]:
    """BASE with `old` (which must occur once) replaced by `new`, and where the change starts."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new), BASE.index(old)


def line_of(text: str, needle: str, start: int) -> int:
    """1-based line of `needle` at or after `start` (anywhere when not found there)."""
    pos = text.find(needle, start) if needle else start
    return text.count("\n", 0, pos if pos >= 0 else text.index(needle)) + 1


def test_base_loads() -> None:
    est = policyfile.load_text(BASE)
    assert [r.name for r in est.rules] == ["web-to-db", "corp-to-web"]
    assert [t.name for t in est.tiers] == ["quarantine", "security", "platform", "application"]


# (id, old, new, `at` (the expected line's text; "" = the change's first line), field, words in the message)
ONE_CHANGE = [
    ("yaml-syntax", "spec: {order: 250}", "spec: {order: [250}", "", "", "YAML syntax error"),
    ("duplicate-key", "  process: mysqld", "  process: mysqld\n  ports: [{port: 1}]", "  ports: [{port: 1}]", "spec.ports",
     "duplicate key 'ports' (first at line 23)"),
    ("unsupported-tag", "process: mysqld", "process: !secret mysqld", "", "spec.process", "unsupported YAML tag"),
    ("not-a-mapping", "apiVersion: microseg.io/v1\nkind: Settings\nspec:\n", "- a list\n- is not a document\n- x:\n", "", "",
     "expected a mapping with apiVersion and kind, got a list"),
    ("wrong-api-version", "apiVersion: microseg.io/v1\nkind: Tier", "apiVersion: microseg.io/v2\nkind: Tier", "", "apiVersion",
     "unsupported apiVersion 'microseg.io/v2' (expected microseg.io/v1)"),
    ("missing-kind", "apiVersion: microseg.io/v1\nkind: Tier\n", "apiVersion: microseg.io/v1\n", "", "",
     "missing required field 'kind'"),
    ("unknown-kind", "kind: Tier", "kind: Tiers", "", "kind", "unknown kind 'Tiers' (did you mean 'Tier'?"),
    ("unknown-top-field", "kind: Tier\n", "kind: Tier\nstatus: {}\n", "status", "status", "unknown field 'status'"),
    ("unknown-field", "  process: mysqld", "  proces: mysqld", "", "spec.proces", "unknown field 'proces' (did you mean 'process'?"),
    ("missing-required", "spec: {order: 250}", "spec: {description: none}", "", "spec", "missing required field 'order'"),
    ("missing-spec", "apiVersion: microseg.io/v1\nkind: Tier\nmetadata: {name: platform}\nspec: {order: 250}\n",
     "apiVersion: microseg.io/v1\nkind: Tier\nmetadata: {name: platform}\n", "", "", "missing required field 'spec'"),
    ("bad-address", "[10.77.1.11]", "[10.77.1.311]", "", "spec.addresses[0]", "'10.77.1.311' is not an IP address"),
    ("host-with-cidr", "addresses: [10.77.1.31]", "addresses: [10.77.1.0/24]", "", "spec.addresses",
     "only unmanaged workloads may have CIDRs"),
    ("bad-label-value", "{env: prod, role: web}", "{env: prod, role: 'web server'}", "", "metadata.labels.role",
     "value must be empty or 1-63"),
    ("bad-label-key", "labels: {env: prod}}", "labels: {env: prod, -x: y}}", "", "metadata.labels.-x", "label key '-x'"),
    ("bad-kind", "kind: host", "kind: hots", "", "spec.kind", "'hots' is not one of host, vm, container, pod, unmanaged (did you mean 'host'?)"),
    ("bad-mode", "mode: enforce}", "mode: enforcing}", "", "spec.mode", "did you mean 'enforce'?"),
    ("attribute-not-text", "prod-db-1, os: linux}", "prod-db-1, os: [linux]}", "", "spec.attributes.os", "expected non-empty text, got a list"),
    ("port-out-of-range", "[{port: 3306}]", "[{port: 70000}]", "", "spec.ports[0].port", "must lie within 1-65535"),
    ("port-not-integer", "[{port: 3306}]", "[{port: mysql}]", "", "spec.ports[0].port", "expected an integer, got text 'mysql'"),
    ("end-before-start", "endPort: 8100", "endPort: 7000", "", "spec.ports[0].endPort", "low <= high"),
    ("end-without-port", "{protocol: icmp}", "{endPort: 9}", "", "spec.ports[1].endPort", "endPort needs port"),
    ("icmp-with-port", "{protocol: icmp}", "{protocol: icmp, port: 1}", "", "spec.ports[1].protocol", "protocol icmp has no ports"),
    ("bad-protocol", "protocol: tcp}, {protocol: icmp}", "protocol: tpc}, {protocol: icmp}", "", "spec.ports[0].protocol",
     "did you mean 'tcp'?"),
    ("service-named-any", "{name: http}", "{name: any}", "", "metadata.name", "the service name 'any' is reserved"),
    ("ip-list-bad-cidr", "[10.77.200.0/24]", "[10.77.200.1/24]", "", "spec.cidrs[0]", "has host bits set"),
    ("bad-tier-name", "{name: platform}", "{name: Platform}", "", "metadata.name", "tier name 'Platform'"),
    ("tier-order-text", "{order: 250}", "{order: late}", "", "spec.order", "expected an integer"),
    ("label-rule-no-condition", 'match: {hostname: "*-db-*", hostnameRegex: "prod-.*", os: linux}', "match: {}", "",
     "spec.match", "needs at least one condition"),
    ("label-rule-bad-regex", '"prod-.*"', '"prod-(["', "", "spec.match.hostnameRegex", "bad regex"),
    ("label-rule-bad-label", "labels: {role: db}", "labels: {role: 'd b'}", "", "spec.labels.role", "value must be empty"),
    ("unknown-tier", "tier: application", "tier: aplication", "", "spec.tier", "unknown tier 'aplication' (did you mean 'application'?"),
    ("unknown-service", "[mysql, {port: 8443}]", "[mysq, {port: 8443}]", "", "spec.rules[0].services[0]",
     "unknown service 'mysq' (did you mean 'mysql'? known: http, mysql)"),
    ("unknown-ip-list", "{ipList: corp}", "{ipList: crop}", "", "spec.rules[1].from[0].ipList",
     "unknown ip list 'crop' (did you mean 'corp'?"),
    ("bad-action", "priority: 100\n      action: allow", "priority: 100\n      action: permit", "action", "spec.rules[0].action",
     "'permit' is not one of allow, deny, pass"),
    ("bad-selector-text", '"env=prod,role=web"', '"env=prod,role in web"', "", "spec.rules[0].from[0].selector",
     "cannot parse selector term 'role in web'"),
    ("bad-match-labels", "matchLabels: {env: prod, role: db}", "matchLabels: {env: prod, role: 'd b'}", "",
     "spec.rules[0].to[0].selector.matchLabels.role", "value must be empty"),
    ("bad-operator", "operator: DoesNotExist", "operator: DoesntExist", "", "spec.rules[0].to[0].selector.matchExpressions[0].operator",
     "did you mean 'DoesNotExist'?"),
    ("in-without-values", "operator: DoesNotExist", "operator: In", "", "spec.rules[0].to[0].selector.matchExpressions[0].values",
     "needs at least one value"),
    ("exists-with-values", "operator: DoesNotExist", "operator: Exists, values: [a]", "",
     "spec.rules[0].to[0].selector.matchExpressions[0].values", "takes no values"),
    ("two-peer-kinds", "{ipList: corp}", '{ipList: corp, selector: "a=b"}', "", "spec.rules[1].from[0]",
     "a peer is exactly one of selector, ipList, cidr, any (got selector, ipList)"),
    ("except-without-cidr", "{ipList: corp}", "{ipList: corp, except: [10.0.0.0/8]}", "", "spec.rules[1].from[0].except",
     "except goes with cidr only"),
    ("except-outside-cidr", "except: [10.77.9.0/24]", "except: [10.78.9.0/24]", "", "spec.rules[1].from[1].except",
     "except 10.78.9.0/24 is not inside any of 10.77.0.0/16"),
    ("unknown-peer-field", "{ipList: corp}", "{iplist: corp}", "", "spec.rules[1].from[0].iplist", "did you mean 'ipList'?"),
    ("naive-time", "notAfter: 2026-12-31T00:00:00Z", "notAfter: 2026-12-31T00:00:00", "", "spec.rules[0].notAfter",
     "needs a time zone"),
    ("not-a-time", "notAfter: 2026-12-31T00:00:00Z", "notAfter: next year", "", "spec.rules[0].notAfter",
     "expected a time such as 2026-12-31T00:00:00Z"),
    ("window-backwards", "notBefore: 2026-01-01T00:00:00Z", "notBefore: 2027-01-01T00:00:00Z", "notAfter", "spec.rules[0].notAfter",
     "notBefore must be earlier than notAfter"),
    ("bad-rule-name", "name: web-to-db", "name: Web_To_DB", "", "spec.rules[0].name", "rule name 'Web_To_DB'"),
    ("priority-not-integer", "priority: 110", "priority: high", "", "spec.rules[1].priority", "expected an integer"),
    ("missing-priority", "      priority: 110\n", "", "- name: corp-to-web", "spec.rules[1]", "missing required field 'priority'"),
    ("unknown-rule-field", "      priority: 110\n", "      priority: 110\n      prio: 1\n", "prio:", "spec.rules[1].prio",
     "unknown field 'prio'"),
    ("empty-peers", "to: any", "to: []", "", "spec.rules[1].to", "needs at least one peer (write `any` for everything)"),
    ("peers-not-a-list", "to: any", "to: everything", "", "spec.rules[1].to", "expected a list, got text 'everything'"),
    ("empty-services", "services: any", "services: []", "", "spec.rules[1].services", "needs at least one service"),
    ("enabled-not-boolean", "services: any\n", "services: any\n      enabled: 1\n", "enabled", "spec.rules[1].enabled",
     "expected true or false, got int 1"),
    ("owner-not-text", "owner: team-crm", "owner: [team-crm]", "", "spec.owner", "expected non-empty text, got a list"),
    ("unknown-quarantine-list", "quarantineAllow: corp", "quarantineAllow: forensics", "", "spec.quarantineAllow",
     "unknown ip list 'forensics' (known: corp)"),
    ("control-plane-icmp", "port: 8440, protocol: tcp}", "port: 8440, protocol: icmp}", "", "spec.controlPlane[0].protocol",
     "has no ports"),
    ("control-plane-no-port", "port: 8440, protocol: tcp}", "protocol: tcp}", "", "spec.controlPlane[0]",
     "missing required field 'port'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "at", "field", "words"), [c[1:] for c in ONE_CHANGE], ids=[c[0] for c in ONE_CHANGE]
)
def test_each_mistake_is_located(old: str, new: str, at: str, field: str, words: str) -> None:
    text, start = changed(old, new)
    line = line_of(text, at, start)
    found = texts.problems(text)
    assert any(p.line == line and p.field == field and words in p.message for p in found), (line, found)
    assert all(p.file == "p.yaml" for p in found)


APPEND = "---\napiVersion: microseg.io/v1\n"
# (id, document appended to BASE, `at` (text on the expected line), field, words)
ACROSS = [
    ("duplicate-workload", "kind: Workload\nmetadata: {name: web-1}\nspec: {addresses: [10.77.1.99]}\n", "name: web-1",
     "metadata.name", "duplicate workload name web-1 (first defined at p.yaml:3)"),
    ("duplicate-ip-list", "kind: IPList\nmetadata: {name: corp}\nspec: {cidrs: [10.1.0.0/16]}\n", "name: corp",
     "metadata.name", "duplicate IP list name corp (first defined at p.yaml:16)"),
    ("duplicate-service", "kind: Service\nmetadata: {name: http}\nspec: {ports: [{port: 80}]}\n", "name: http",
     "metadata.name", "duplicate service name http (first defined at p.yaml:28)"),
    ("duplicate-tier", "kind: Tier\nmetadata: {name: platform}\nspec: {order: 260}\n", "name: platform",
     "metadata.name", "duplicate tier name platform (first defined at p.yaml:33)"),
    ("duplicate-label-rule", "kind: LabelRule\nmetadata: {name: db-by-name}\nspec: {match: {os: linux}, labels: {a: b}}\n",
     "name: db-by-name", "metadata.name", "duplicate label rule name db-by-name"),
    ("duplicate-policy", "kind: Policy\nmetadata: {name: crm}\nspec: {tier: security, rules: []}\n", "name: crm",
     "metadata.name", "duplicate policy name crm"),
    ("duplicate-rule-name", "kind: Policy\nmetadata: {name: other}\nspec:\n  tier: application\n  rules:\n"
     "    - {name: web-to-db, priority: 500, action: deny, from: any, to: any, services: any}\n", "web-to-db, priority: 500",
     "spec.rules[0].name", "duplicate rule name web-to-db in tier application (first defined at p.yaml:50)"),
    ("priority-tie-overlapping-other-action", "kind: Policy\nmetadata: {name: other}\nspec:\n  tier: application\n"
     "  rules:\n    - {name: x, priority: 100, action: deny, from: any, to: any, services: any}\n", "name: x",
     "spec.rules[0].priority", "rule x (deny) and rule web-to-db (allow, p.yaml:51) both have priority 100 in tier "
     "application and can match the same flow"),
    ("tier-order-tie-built-in", "kind: Tier\nmetadata: {name: late}\nspec: {order: 200}\n", "order: 200",
     "spec.order", "tier order 200 is already used by tier security; tier orders must be unique"),
    ("tier-order-tie-declared", "kind: Tier\nmetadata: {name: late}\nspec: {order: 250}\n", "order: 250}\n",
     "spec.order", "tier order 250 is already used by tier platform"),
    ("tier-before-quarantine", "kind: Tier\nmetadata: {name: early}\nspec: {order: 50}\n", "order: 50",
     "spec.order", "tier early (order 50) comes before tier quarantine (order 100): quarantine is always evaluated first"),
    ("quarantine-after-a-built-in", "kind: Tier\nmetadata: {name: quarantine}\nspec: {order: 210}\n", "order: 210",
     "spec.order", "tier security (order 200) comes before tier quarantine (order 210)"),
    ("overlapping-hosts", "kind: Workload\nmetadata: {name: web-2}\nspec: {addresses: [10.77.1.11]}\n", "spec:",
     "spec.addresses", "address 10.77.1.11 of workload web-2 overlaps 10.77.1.11 of workload web-1 (p.yaml:4)"),
    ("unmanaged-cidr-contains-host", "kind: Workload\nmetadata: {name: net}\nspec: {kind: unmanaged, addresses: [10.77.1.0/24]}\n",
     "spec:", "spec.addresses", "address 10.77.1.0/24 of workload net overlaps 10.77.1.11 of workload web-1"),
    ("second-settings", "kind: Settings\nspec: {}\n", "kind: Settings\nspec: {}", "kind",
     "only one Settings document is allowed (the first is at p.yaml:65)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "at", "field", "words"), [c[1:] for c in ACROSS], ids=[c[0] for c in ACROSS]
)
def test_cross_document_mistakes(extra: str, at: str, field: str, words: str) -> None:
    text = BASE + APPEND + extra
    line = line_of(text, at, len(BASE))
    found = texts.problems(text)
    assert any(p.line == line and p.field == field and words in p.message for p in found), (line, found)


# (id, documents appended to BASE that are fine)
FINE = [
    ("same-rule-name-in-another-tier", "kind: Policy\nmetadata: {name: guard}\nspec:\n  tier: security\n  rules:\n"
     "    - {name: web-to-db, priority: 100, action: deny, from: any, to: any, services: any}\n"),
    ("built-in-tier-moved", "kind: Tier\nmetadata: {name: security}\nspec: {order: 240}\n"),
    ("addresses-next-to-each-other", "kind: Workload\nmetadata: {name: net}\nspec: {kind: unmanaged, addresses: [10.77.2.0/24]}\n"),
    ("quarantine-moved-but-still-first", "kind: Tier\nmetadata: {name: quarantine}\nspec: {order: 10}\n"),
    ("same-address-in-v6", "kind: Workload\nmetadata: {name: v6}\nspec: {addresses: ['::ffff:a4d:10b']}\n"),
]  # fmt: skip


@pytest.mark.parametrize("extra", [c[1] for c in FINE], ids=[c[0] for c in FINE])
def test_what_is_not_a_mistake(extra: str) -> None:
    policyfile.load_text(BASE + APPEND + extra)


def test_a_broken_object_is_not_reported_again_where_it_is_used() -> None:
    text, _ = changed("[{port: 3306}]", "[{port: 0}]")
    found = texts.problems(text)
    assert [(p.field, "1-65535" in p.message) for p in found] == [("spec.ports[0].port", True)]


def test_a_broken_rule_still_clashes_with_its_neighbours_by_name() -> None:
    text, start = changed(
        "name: corp-to-web\n      priority: 110\n      action: allow",
        "name: web-to-db\n      priority: 110\n      action: alow",
    )
    found = {(p.line, p.field): p.message for p in texts.problems(text)}
    line = line_of(text, "", start)
    assert "did you mean 'allow'?" in found[(line + 2, "spec.rules[1].action")]
    assert "duplicate rule name web-to-db" in found[(line, "spec.rules[1].name")]


def test_a_document_without_a_name_still_has_its_other_fields_checked() -> None:
    found = texts.problems(texts.doc("Workload", "metadata: {labels: {env: 'a b'}}\nspec: {addresses: [nope]}\n")
                           + "---\n" + texts.doc("Policy", """\
        metadata: {}
        spec: {tier: application, rules: [{name: r, priority: 1, action: allow, from: any, to: any, services: [x]}]}
        """))  # fmt: skip
    assert [(p.line, p.field) for p in found] == [
        (3, "metadata"), (3, "metadata.labels.env"), (4, "spec.addresses[0]"),
        (8, "metadata"), (9, "spec.rules[0].services[0]"),
    ]  # fmt: skip


def test_list_items_are_located_by_their_path_in_the_list() -> None:
    text = texts.HEAD + textwrap.dedent("""\
        kind: List
        items:
          - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: a}, spec: {addresses: [10.77.0.1]}}
          - apiVersion: microseg.io/v1
            kind: Workload
            metadata: {name: b}
            spec: {addresses: [10.77.0.300]}
          - {apiVersion: microseg.io/v1, kind: Workload, metadata: {name: a}, spec: {addresses: [10.77.0.3]}}
        """)  # fmt: skip
    found = {(p.line, p.field): p.message for p in texts.problems(text)}
    assert "not an IP address" in found[(8, "items[1].spec.addresses[0]")]
    assert "duplicate workload name a (first defined at p.yaml:4)" in found[(9, "items[2].metadata.name")]


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        texts.doc("Service", "metadata: {name: s}\nspec: {ports: [{port: 0}]}\n")
    )
    sub = tmp_path / "teams" / "crm"
    sub.mkdir(parents=True)
    (sub / "b.yml").write_text(
        texts.doc("Workload", "metadata: {name: w}\nspec: {addresses: [nope]}\n")
        + "---\n"
        + texts.doc("Workload", "metadata: {name: w}\nspec: {addresses: [10.77.0.1], mode: on}\n")
    )
    (sub / "c.yaml").write_text("kind: [\n")
    (tmp_path / "notes.txt").write_text("not yaml at all: [")
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load([tmp_path])
    got = [(Path(p.file).name, p.line, p.field) for p in caught.value.problems]
    assert got == [
        ("a.yaml", 4, "spec.ports[0].port"),
        ("b.yml", 4, "spec.addresses[0]"),
        ("b.yml", 8, "metadata.name"),
        ("b.yml", 9, "spec.mode"),
        ("c.yaml", 2, ""),
    ]
    text = str(caught.value)
    assert text.startswith("5 problems in policy files; nothing was loaded")
    assert (
        f"{sub / 'b.yml'}:8: metadata.name: duplicate workload name w (first defined at {sub / 'b.yml'}:3)"
        in text
    )


def test_hidden_folders_and_other_files_are_not_read(tmp_path: Path) -> None:
    hidden = tmp_path / ".github" / "workflows"
    hidden.mkdir(parents=True)
    (hidden / "ci.yaml").write_text("on: push\n")
    (tmp_path / "README.md").write_text("# policies\n")
    (tmp_path / "w.yaml").write_text(
        texts.doc("Workload", "metadata: {name: w}\nspec: {addresses: [10.77.0.1]}\n")
    )
    assert [w.name for w in policyfile.load([tmp_path]).workloads] == ["w"]


def test_a_missing_path_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(errors.PolicyFileError) as caught:
        policyfile.load([tmp_path / "nope"])
    assert [(p.line, p.message) for p in caught.value.problems] == [(0, "no such file or directory")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: &x [1, *x]\n", "a recursive alias cannot be loaded"),
        ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
         for p, c in zip("abcdefgh", "bcdefghi", strict=True)), "expands to too many nodes"),
        ("{? [a]: b}\n", "a mapping key must be plain text"),
    ],
    ids=["recursive-alias", "alias-bomb", "complex-key"],
)  # fmt: skip
def test_yaml_that_plain_loading_would_hide(text: str, words: str) -> None:
    assert any(words in p.message for p in texts.problems(text))
