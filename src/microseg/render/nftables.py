"""nftables rendering: one ruleset document -> one nft script that replaces our table atomically.

Fed by a ruleset document (through `plan`); feeds the agent, which loads the text with one
`nft -f` (one kernel transaction), and `nftverify`, which evaluates the same text in tests.

Shape of the output:

    table inet microseg                 create if missing, so that the delete cannot fail
    delete table inet microseg          drops old rules *and* old set elements (`flush table` would not)
    table inet microseg { sets; chain input; chain output; chain in_<tier>...; chain out_<tier>... }

Every address set becomes a `<set>_v4` and a `<set>_v6` interval set, each declared only when it
has members: a rule naming a set family with no members can match nothing, so it is left out with
its set (an IPv4-only estate carries no IPv6 sets and no IPv6 rules for them). The agent replaces
the whole table on every change, so a set that gains its first member comes back with its rules.

`input` / `output` are base chains with policy accept; the default deny is an explicit last rule
so that it is counted and logged. Before any tier: loopback, established/related, invalid (dropped in
enforce mode, counted and accepted otherwise: alert and visibility never block), IPv6 neighbour
discovery and MLD (conntrack leaves them untracked; without them IPv6 dies under a default deny)
and the control-plane endpoints (and their TCP replies, for when conntrack forgot the agent's own
connection: ACK set, so they open nothing). Only new (or untracked) packets reach the tier chains,
so logs and per-rule counters count connections, not packets. `pass` is `return` from the tier chain.

Why no concatenated sets or verdict maps: first-match order across allow/deny/pass, a counter and a
comment per entry, and log prefixes per rule all need one rule per entry anyway. Per host we have
tens to hundreds of rules; the address lists, which are what grows, are already named interval sets
(one lookup per rule), and only the first packet of a connection walks the chains. A concatenated
`addr . port` set would save little and lose the per-rule trace back to the policy.

Counters: every rule carries an anonymous `counter` and the comment of the entry it came from,
which is how the agent attributes counts back to the rule (`counter_refs`): the comment is the ref
itself when it is a safe nft string of at most 128 characters, else a shortened safe form with a
hash of the ref, so two refs never share a comment. All rules of one ref (both families, each port
spec, the rate-limited pair) are summed. Only new packets reach the tier chains, so a rule's
packets are connection attempts (a retried SYN counts again). Counters are state, not rules: the
table is still replaced whole, which starts them at zero, and the tamper check lists statelessly.

Logging: `log prefix "ms:d:<ref>" group G` (d = dropped, enforce) or `ms:w:<ref>` (would-block,
alert), at most 127 characters. With `log_rate_per_second` > 0 a logged rule is split in two: the
first carries `limit rate N/second` (a token bucket per rule) and the log, the second the same
verdict without the log, so a flood only loses log lines, never the verdict.

Processes and users: with a cgroup for the entry's process, `socket cgroupv2 level N "<path>"` (the
socket's ancestor at depth N, so child cgroups of a service match too; the kernel looks up TCP and
UDP sockets only, so such an entry matches nothing else); with a uid for an egress entry's user,
`meta skuid`. Cgroup paths are given relative to the cgroup2 hierarchy's root (that is what the
level counts); nft resolves them under /sys/fs/cgroup when loading, so on hybrid hosts the mount
point (`cgroup2_mount`, e.g. "unified") is put in front. Everything else is enforced at port
level and reported in `warnings`.

It does not talk to the kernel, read the host, or decide what a document means (`semantics` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from microseg import settings as config
from microseg.model import addresses, rules, ruleset, services, workloads
from microseg.render import names, plan, semantics

_DEFAULTS = config.RenderSettings()

ND_TYPES = (
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld2-listener-report",
)
"""ICMPv6 types conntrack leaves untracked (130-136 without redirect, 143): IPv6 needs them."""


@dataclass(frozen=True)
class NftRender:
    """The nft script and what could not be enforced exactly."""

    text: str
    warnings: tuple[str, ...]


def render(
    doc: ruleset.RulesetDocument,
    settings: config.RenderSettings = _DEFAULTS,
    cgroups: Mapping[str, str] | None = None,
    *,
    uids: Mapping[str, int] | None = None,
) -> NftRender:
    """The script replacing our table with `doc`'s rules; `cgroups` and `uids` enable process and
    (egress) user matching where the host knows them, otherwise those entries are enforced at port
    level and listed in `warnings`."""
    host = plan.HostKnowledge(cgroups or {}, uids or {}, ingress_cgroup=True)
    the_plan = plan.build(doc, host)
    return NftRender(NftablesRenderer(doc, settings).script(the_plan), the_plan.warnings)


def rule_comment(ref: str) -> str:
    """The comment a rule from `ref` carries: the ref when it fits as it is, else a safe prefix and a
    hash of the whole ref (distinct refs, distinct comments)."""
    safe = names.text(ref, names.NFT_COMMENT_MAX)
    if safe == ref:
        return ref
    return f"{names.text(ref, names.NFT_COMMENT_MAX - 9)} {names.digest(ref)}"


def counter_refs(doc: ruleset.RulesetDocument) -> dict[str, str]:
    """Rule comment -> ref for everything whose counter means a rule decided: the document's
    entries, the control-plane rules and the default deny (not loopback, established and the like,
    which count packets of connections something else decided)."""
    refs = [e.ref for e in (*doc.ingress, *doc.egress)]
    refs += [semantics.CONTROL_PLANE_REF, semantics.CONTROL_PLANE_REPLY_REF, semantics.DEFAULT_REF]
    return {rule_comment(ref): ref for ref in refs}


def render_delete(settings: config.RenderSettings = _DEFAULTS) -> str:
    """A script removing our table (and nothing else); it succeeds whether or not the table exists."""
    table = names.table_name(settings.table)
    return f"table inet {table}\ndelete table inet {table}\n"


class NftablesRenderer:
    """Spells one planned document in nft syntax."""

    def __init__(self, doc: ruleset.RulesetDocument, settings: config.RenderSettings) -> None:
        self.doc = doc
        self.settings = settings
        self.table = names.table_name(settings.table)
        self.sets = names.unique({s.name: names.nft_identifier(s.name, 60) for s in doc.address_sets}, "set")
        self.members = {
            (s.name, family): plan.collapsed(s.networks, family)
            for s in doc.address_sets
            for family in (4, 6)
        }
        tiers = dict.fromkeys(doc.tiers)
        self.chains = {
            direction: names.unique({t: names.nft_identifier(f"{direction}_{t}") for t in tiers}, "chain")
            for direction in ("in", "out")
        }

    def script(self, the_plan: plan.Plan) -> str:
        """The whole script."""
        body = [f"\tcomment {self._quote(self._table_comment(), names.NFT_COMMENT_MAX)}"]
        for address_set in self.doc.address_sets:
            for family in (4, 6):
                if self.members[(address_set.name, family)]:
                    body += ["", *self._set(address_set, family)]
        for hook, direction, dplan in (("input", "in", the_plan.ingress), ("output", "out", the_plan.egress)):
            body += ["", *self._base_chain(hook, direction, dplan)]
        for direction, dplan in (("in", the_plan.ingress), ("out", the_plan.egress)):
            for tier, planned in dplan.tiers:
                rule_lines = [f"\t\t{line}" for r in planned for line in self._rule(r, direction)]
                body += ["", f"\tchain {self.chains[direction][tier]} {{", *rule_lines, "\t}"]
        head = [f"table inet {self.table}", f"delete table inet {self.table}", f"table inet {self.table} {{"]
        return "\n".join([*head, *body, "}"]) + "\n"

    def _table_comment(self) -> str:
        digest = self.doc.hash or ruleset.content_hash(self.doc)
        return f"{digest} {self.doc.workload} {self.doc.policy_version}"

    def _set(self, address_set: ruleset.AddressSet, family: int) -> list[str]:
        lines = [
            f"\tset {self.sets[address_set.name]}_v{family} {{",
            f"\t\ttype {'ipv4_addr' if family == 4 else 'ipv6_addr'}",
            "\t\tflags interval",
        ]
        members = self.members[(address_set.name, family)]
        lines += ["\t\telements = {", *(f"\t\t\t{_net(n)}," for n in members), "\t\t}"]
        return [*lines, "\t}"]

    def _base_chain(self, hook: str, direction: str, dplan: plan.DirectionPlan) -> list[str]:
        iface = "iif" if hook == "input" else "oif"
        invalid = "drop" if self.doc.mode is workloads.Mode.ENFORCE else "accept"
        rules_ = [
            f'{iface} "lo" counter accept comment "system/loopback"',
            'ct state established,related counter accept comment "system/established"',
            f'ct state invalid counter {invalid} comment "system/invalid"',
            f'icmpv6 type {{ {", ".join(ND_TYPES)} }} counter accept comment "system/ipv6-nd"',
            *(line for r in dplan.control for line in self._rule(r, direction)),
            *self._control_replies(),
            *(
                f'counter jump {self.chains[direction][tier]} comment "tier {names.text(tier, 100)}"'
                for tier, _ in dplan.tiers
            ),
            *self._verdict("", rules.Action.DENY, semantics.DEFAULT_REF),
        ]
        head = [
            f"\tchain {hook} {{",
            f"\t\ttype filter hook {hook} priority {self.settings.chain_priority}; policy accept;",
        ]
        return [*head, *(f"\t\t{r}" for r in rules_), "\t}"]

    def _control_replies(self) -> list[str]:
        """The agent's control-plane connections survive a lost conntrack entry: packets from the
        endpoint's port with ACK set (in: the server answering us; out: a server on this host
        answering its agents) never open a connection, so this admits nothing new."""
        out = []
        for net, port in plan.control_replies(self.doc):
            proto = "ip" if net.version == 4 else "ip6"
            out.append(
                f"{proto} saddr {_net(net)} tcp sport {port} tcp flags & ack == ack counter accept "
                f'comment "{semantics.CONTROL_PLANE_REPLY_REF}"'
            )
        return out

    def _rule(self, rule: plan.PlannedRule, direction: str) -> list[str]:
        if self._names_an_empty_set(rule):
            return []  # it can match nothing, and its set is not declared (see the module docstring)
        return self._verdict(" ".join(self._matches(rule, direction)), rule.action, rule.ref)

    def _names_an_empty_set(self, rule: plan.PlannedRule) -> bool:
        if rule.family is None:  # family-neutral rules name no sets (`plan`)
            return False
        named = [m.set_name for m in (rule.peer, rule.local) if m is not None and m.set_name is not None]
        return any(not self.members[(name, rule.family)] for name in named)

    def _verdict(self, match: str, action: rules.Action, ref: str) -> list[str]:
        """One rule, or two when a log line is rate limited (see the module docstring)."""
        comment = f'comment "{rule_comment(ref)}"'
        lead = f"{match} " if match else ""
        if action is rules.Action.PASS:
            return [f"{lead}counter return {comment}"]
        verdict, logged = semantics.outcome(self.doc.mode, action)
        if not logged:
            return [f"{lead}counter {verdict} {comment}"]
        prefix = names.log_prefix("d" if verdict == "drop" else "w", ref, names.NFT_LOG_PREFIX_MAX)
        log = f"log prefix {self._quote(prefix, names.NFT_LOG_PREFIX_MAX)} group {self.settings.log_group}"
        rate = self.settings.log_rate_per_second
        if rate <= 0:
            return [f"{lead}counter {log} {verdict} {comment}"]
        return [
            f"{lead}limit rate {rate}/second counter {log} {verdict} {comment}",
            f"{lead}counter {verdict} {comment}",
        ]

    def _matches(self, rule: plan.PlannedRule, direction: str) -> list[str]:
        peer_field, local_field = ("saddr", "daddr") if direction == "in" else ("daddr", "saddr")
        out = []
        if rule.peer is not None:
            out.append(self._address(rule.peer, rule.family, peer_field))
        if rule.local is not None:
            out.append(self._address(rule.local, rule.family, local_field))
        if rule.family is not None and not out:
            out.append(f"meta nfproto ipv{rule.family}")
        out += _protocol(rule.spec, rule.family)
        if rule.not_before is not None:
            out.append(f"meta time >= {rule.not_before}")
        if rule.not_after is not None:
            out.append(f"meta time < {rule.not_after}")
        if rule.cgroup is not None:
            level = len(rule.cgroup.strip("/").split("/"))
            path = "/".join(p for p in (self.settings.cgroup2_mount.strip("/"), rule.cgroup.strip("/")) if p)
            out.append(f"socket cgroupv2 level {level} {self._quote(path, 4096)}")
        if rule.uid is not None:
            out.append(f"meta skuid {rule.uid}")
        return out

    def _address(self, match: plan.AddressMatch, family: int | None, field: str) -> str:
        proto = "ip" if family == 4 else "ip6"
        if match.set_name is not None:
            return f"{proto} {field} @{self.sets[match.set_name]}_v{family}"
        nets = [_net(n) for n in match.networks]
        value = nets[0] if len(nets) == 1 else "{ " + ", ".join(nets) + " }"
        return f"{proto} {field} {value}"

    @staticmethod
    def _quote(value: str, limit: int) -> str:
        return '"' + names.text(value, limit) + '"'


def _protocol(spec: services.PortSpec | None, family: int | None) -> list[str]:
    if spec is None:
        return ["meta l4proto != { tcp, udp, sctp }"]
    proto = spec.protocol
    if proto is services.Protocol.ANY:
        return []
    if proto is services.Protocol.ICMP:
        return ["meta l4proto icmp" if family == 4 else "meta l4proto ipv6-icmp"]
    if not spec.ports:
        return [f"meta l4proto {proto.value}"]
    ports = [str(r) for r in spec.ports]
    value = ports[0] if len(ports) == 1 else "{ " + ", ".join(ports) + " }"
    return [f"{proto.value} dport {value}"]


def _net(net: addresses.Network) -> str:
    """A host as a bare address, a network in CIDR form."""
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def render_member_update(
    old: ruleset.RulesetDocument,
    new: ruleset.RulesetDocument,
    settings: config.RenderSettings = _DEFAULTS,
) -> str | None:
    """`delete element` / `add element` commands turning the table `render(old)` loaded into one
    whose rules and set elements are those of `render(new)` (one `nft -f`, one transaction); None
    when `new` differs from `old` in more than address-set members: its header (workload, mode,
    policy version, tiers, control plane), its entries, its set names, or a set family becoming
    empty or non-empty (the renderer leaves empty set families out with the rules that name them,
    so that needs the whole table). An empty text: nothing in the kernel changes. The table's
    comment (which names the document hash) cannot be changed in place; it keeps naming `old`.

    Elements are compared as the renderer spells them (merged intervals per family), so each delete
    names an interval the table holds and each add an interval the new table holds. Sets with the
    same members are skipped by their digest, so the cost follows the sets that changed."""
    if not _same_rules(old, new):
        return None
    table = names.table_name(settings.table)
    set_names = names.unique({s.name: names.nft_identifier(s.name, 60) for s in new.address_sets}, "set")
    lines: list[str] = []
    try:
        for was_set, now_set in zip(old.address_sets, new.address_sets, strict=True):
            if was_set.digest == now_set.digest:
                continue
            for family in (4, 6):
                was, now = _collapsed_members(was_set, family), _collapsed_members(now_set, family)
                if bool(was) != bool(now):
                    return None
                gone, added = _difference(was, now)
                target = f"inet {table} {set_names[now_set.name]}_v{family}"
                lines += _element_commands("delete", target, gone)
                lines += _element_commands("add", target, added)
    finally:
        _keep_sets_of(new)
    return "".join(f"{line}\n" for line in lines)


_COLLAPSED: dict[tuple[str, int], tuple[addresses.Network, ...]] = {}
"""Merged members by (set digest, family): the set an update starts from is the one the update
before made, so a change to a large set merges only the new members (a cache of a pure function).
Only the sets of the last update's new document stay (`_keep_sets_of`): an entry holds its
document's network objects, and an agent kept the sets of its last 256 updates (with
`ruleset.content_hash`'s cache, 130 MB more after 30 provisions of a 5,000-peer document in
bench/bench_agent.py)."""


def _keep_sets_of(doc: ruleset.RulesetDocument) -> None:
    """Forget the merged members of every set that `doc` does not hold."""
    kept = {s.digest for s in doc.address_sets}
    for key in [key for key in _COLLAPSED if key[0] not in kept]:
        del _COLLAPSED[key]


def _collapsed_members(address_set: ruleset.AddressSet, family: int) -> tuple[addresses.Network, ...]:
    key = (address_set.digest, family)
    found = _COLLAPSED.get(key)
    if found is None:
        if len(_COLLAPSED) >= 256:
            _COLLAPSED.clear()
        found = _COLLAPSED[key] = plan.collapsed(address_set.networks, family)
    return found


def _difference(
    was: tuple[addresses.Network, ...], now: tuple[addresses.Network, ...]
) -> tuple[list[addresses.Network], list[addresses.Network]]:
    """(only in `was`, only in `now`), in their order; the common head and tail of the two sorted
    lists are skipped first (a few moved members among thousands)."""
    head = 0
    while head < min(len(was), len(now)) and was[head] == now[head]:
        head += 1
    tail = 0
    while tail < min(len(was), len(now)) - head and was[-1 - tail] == now[-1 - tail]:
        tail += 1
    old_middle, new_middle = was[head : len(was) - tail], now[head : len(now) - tail]
    kept_old, kept_new = set(old_middle), set(new_middle)
    return [n for n in old_middle if n not in kept_new], [n for n in new_middle if n not in kept_old]


def _same_rules(old: ruleset.RulesetDocument, new: ruleset.RulesetDocument) -> bool:
    """Whether the two documents can differ only in set members (and set descriptions)."""
    return (
        ruleset.header_members(old) == ruleset.header_members(new)
        and [s.name for s in old.address_sets] == [s.name for s in new.address_sets]
        and old.ingress == new.ingress
        and old.egress == new.egress
    )


def _element_commands(verb: str, target: str, nets: list[addresses.Network]) -> list[str]:
    if not nets:
        return []
    return [f"{verb} element {target} {{ {', '.join(_net(n) for n in nets)} }}"]
