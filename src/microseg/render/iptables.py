"""iptables + ipset rendering: the fallback for hosts where the agent cannot use nft directly.

Fed by a ruleset document (through `plan`, the same plan the nftables renderer spells, so both mean
the same); feeds the agent, which runs, in this order, `ipset restore` with `.ipset`, then
`iptables-restore --noflush` with `.v4` and `ip6tables-restore --noflush` with `.v6`.

- ipset: one `hash:net` set per address set and family (`<prefix><4|6>-<set>`, 31 chars at most),
  created with `-exist`, filled as a `-t` twin and swapped in, so each set changes atomically while
  rules keep referring to it. hash:net cannot hold a /0, so that becomes two /1 halves.
- iptables: our chains `MS-INPUT`, `MS-OUTPUT`, `MS-IN-<tier>`, `MS-OUT-<tier>` (28 chars at most,
  long tier names hashed) are declared, which flushes them, and refilled. The same order as in nft:
  loopback, established/related, invalid, IPv6 neighbour discovery, control plane, tiers, default.
  Deny logs with `NFLOG` (non-terminating) followed by `DROP` (enforce) or `ACCEPT` (alert).
- The jumps from INPUT/OUTPUT: `.v4`/`.v6` delete our jump and insert it again at the top, which
  keeps exactly one and moves it back in front if someone inserted rules before it; but a delete of
  a missing rule fails the whole restore, so the very first load uses `.v4_install`/`.v6_install`
  (insert only). The agent picks by checking `iptables -C INPUT -m comment --comment microseg -j MS-INPUT`.

Counters: iptables counts every rule natively (`iptables-save -c`); a rule's comment is its ref
made safe (`counter_refs` maps it back). The NFLOG rule of a logged deny matches the same packets
as the DROP/ACCEPT after it, so only rules with a verdict are to be summed.

Differences from nftables, each reported as a warning where it matters: xt_cgroup sees no socket
on a new inbound connection, so process constraints are only enforced on egress; time windows
end at 2038-01-19 (xt_time is 32-bit); NFLOG prefixes are cut at 63 characters.

It does not remove chains of tiers that disappeared or sets no longer used (they are unreferenced
and harmless; the agent may destroy them), and it does not talk to the kernel.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from microseg import settings as config
from microseg.errors import PermanentError
from microseg.model import rules, ruleset, services, workloads
from microseg.render import names, plan, semantics

_DEFAULTS = config.RenderSettings()
_XT_TIME_MAX = 2**31 - 1
_ND_TYPES = (130, 131, 132, 133, 134, 135, 136, 143)
_MULTIPORT_SLOTS = 15


@dataclass(frozen=True)
class IptablesRender:
    """The three restore inputs (plus first-install variants) and what could not be enforced exactly."""

    ipset: str
    v4: str
    v6: str
    v4_install: str
    v6_install: str
    warnings: tuple[str, ...]


def render(
    doc: ruleset.RulesetDocument,
    settings: config.RenderSettings = _DEFAULTS,
    cgroups: Mapping[str, str] | None = None,
    *,
    uids: Mapping[str, int] | None = None,
) -> IptablesRender:
    """The ipset and iptables-restore inputs for `doc` (see the module docstring for the order)."""
    host = plan.HostKnowledge(cgroups or {}, uids or {}, ingress_cgroup=False)
    the_plan = plan.build(doc, host)
    renderer = IptablesRenderer(doc, settings)
    v4, v6 = (renderer.restore(the_plan, family, install=False) for family in (4, 6))
    v4_install, v6_install = (renderer.restore(the_plan, family, install=True) for family in (4, 6))
    warnings = tuple(dict.fromkeys((*the_plan.warnings, *renderer.warnings)))
    return IptablesRender(renderer.ipset(), v4, v6, v4_install, v6_install, warnings)


def counter_refs(doc: ruleset.RulesetDocument) -> dict[str, str]:
    """Rule comment -> ref for the rules whose counters mean a rule decided (as in nftables:
    the document's entries, the control plane and the default deny)."""
    refs = [e.ref for e in (*doc.ingress, *doc.egress)]
    refs += [semantics.CONTROL_PLANE_REF, semantics.CONTROL_PLANE_REPLY_REF, semantics.DEFAULT_REF]
    return {names.text(ref, names.IPT_COMMENT_MAX): ref for ref in refs}


class IptablesRenderer:
    """Spells one planned document as ipset and iptables-restore input."""

    def __init__(self, doc: ruleset.RulesetDocument, settings: config.RenderSettings) -> None:
        self.doc = doc
        self.settings = settings
        self.prefix = names.ipt_prefix(settings.ipset_prefix)
        tiers = dict.fromkeys(doc.tiers)
        short = names.unique({t: names.ipt_tier(settings.ipset_prefix, t) for t in tiers}, "tier chain")
        self.chains = {d: {t: f"{self.prefix}-{d}-{s}" for t, s in short.items()} for d in ("IN", "OUT")}
        self.warnings: list[str] = []
        self.portless = f"{self.prefix}-PORTLESS"

    def set_name(self, name: str, family: int) -> str:
        """The ipset holding one family of a document set."""
        return names.ipset_name(self.settings.ipset_prefix, name, family)

    def ipset(self) -> str:
        """The `ipset restore` script: every set created if missing, refilled as a twin, swapped."""
        lines = [f"# {self._header()}"]
        every = {f"{s.name}/{f}": self.set_name(s.name, f) for s in self.doc.address_sets for f in (4, 6)}
        names.unique(every, "ipset")
        for address_set in self.doc.address_sets:
            for family in (4, 6):
                name = self.set_name(address_set.name, family)
                kind = f"hash:net family {'inet' if family == 4 else 'inet6'} maxelem 1048576 -exist"
                lines += [f"create {name} {kind}", f"create {name}-t {kind}", f"flush {name}-t"]
                for net in plan.collapsed(address_set.networks, family):
                    lines += [f"add {name}-t {half}" for half in plan.split_for_hash_net(net)]
                lines += [f"swap {name}-t {name}", f"destroy {name}-t"]
        return "\n".join(lines) + "\n"

    def _header(self) -> str:
        digest = self.doc.hash or ruleset.content_hash(self.doc)
        return names.text(f"microseg {digest} {self.doc.workload} {self.doc.policy_version}", 200)

    def restore(self, the_plan: plan.Plan, family: int, install: bool) -> str:
        """The iptables-restore (family 4) or ip6tables-restore (family 6) input."""
        body: list[str] = []
        chains = [f"{self.prefix}-INPUT", f"{self.prefix}-OUTPUT"]
        for direction, dplan in (("IN", the_plan.ingress), ("OUT", the_plan.egress)):
            body += self._base_chain(direction, dplan, family)
            for tier, planned in dplan.tiers:
                chain = self.chains[direction][tier]
                chains.append(chain)
                body += [f"-A {chain} {r}" for p in planned for r in self._rule(p, direction, family)]
        if any(p.spec is None for d in (the_plan.ingress, the_plan.egress) for p in d.control):
            chains.append(self.portless)
            body += self._portless_chain()
        jumps: list[str] = []
        for builtin, ours in (("INPUT", chains[0]), ("OUTPUT", chains[1])):
            spec = f"-m comment --comment microseg -j {ours}"
            jumps += ([] if install else [f"-D {builtin} {spec}"]) + [f"-I {builtin} 1 {spec}"]
        head = [f"# {self._header()}", "*filter", *(f":{c} - [0:0]" for c in chains)]
        return "\n".join([*head, *jumps, *body, "COMMIT"]) + "\n"

    def _base_chain(self, direction: str, dplan: plan.DirectionPlan, family: int) -> list[str]:
        chain = f"{self.prefix}-{direction}PUT"
        iface = "-i" if direction == "IN" else "-o"
        invalid = "DROP" if self.doc.mode is workloads.Mode.ENFORCE else "ACCEPT"
        lines = [
            f'{iface} lo -m comment --comment "system/loopback" -j ACCEPT',
            '-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "system/established" -j ACCEPT',
            f'-m conntrack --ctstate INVALID -m comment --comment "system/invalid" -j {invalid}',
        ]
        if family == 6:
            lines += [
                f'-p ipv6-icmp -m icmp6 --icmpv6-type {t} -m comment --comment "system/ipv6-nd" -j ACCEPT'
                for t in _ND_TYPES
            ]
        lines += [line for r in dplan.control for line in self._rule(r, direction, family)]
        lines += [
            f"-s {net} -p tcp -m tcp --sport {_range(port)} --tcp-flags ACK ACK "
            f'-m comment --comment "{semantics.CONTROL_PLANE_REPLY_REF}" -j ACCEPT'
            for net, port in plan.control_replies(self.doc)
            if net.version == family
        ]  # the same reply rule as the nftables renderer's (see there)
        lines += [
            f'-m comment --comment "tier {names.text(tier, 100)}" -j {self.chains[direction][tier]}'
            for tier, _ in dplan.tiers
        ]
        lines += self._verdicts([], rules.Action.DENY, semantics.DEFAULT_REF)
        return [f"-A {chain} {line}" for line in lines]

    def _portless_chain(self) -> list[str]:
        """Accepts what has no ports (an `any` control-plane endpoint's port range cannot apply)."""
        ref = f'-m comment --comment "{semantics.CONTROL_PLANE_REF}"'
        return [
            *(f"-A {self.portless} -p {p.value} -j RETURN" for p in plan.PORTED),
            f"-A {self.portless} {ref} -j ACCEPT",
        ]

    def _rule(self, rule: plan.PlannedRule, direction: str, family: int) -> list[str]:
        if rule.family not in (None, family):
            return []
        window = self._window(rule)
        if window is None:
            return []
        out = []
        for addrs in self._addresses(rule, direction, family):
            for proto in self._protocols(rule.spec, family):
                matches = [*addrs, *proto, *window, *self._process(rule)]
                if rule.spec is None:
                    if rule.action is not rules.Action.ALLOW:
                        raise PermanentError(f"{rule.ref}: a port-less rule must allow")
                    comment = f'-m comment --comment "{names.text(rule.ref, names.IPT_COMMENT_MAX)}"'
                    out.append(" ".join([*matches, comment, f"-j {self.portless}"]))
                else:
                    out += self._verdicts(matches, rule.action, rule.ref)
        return out

    def _verdicts(self, matches: list[str], action: rules.Action, ref: str) -> list[str]:
        lead = [*matches, f'-m comment --comment "{names.text(ref, names.IPT_COMMENT_MAX)}"']
        if action is rules.Action.PASS:
            return [" ".join([*lead, "-j RETURN"])]
        verdict, logged = semantics.outcome(self.doc.mode, action)
        target = "-j ACCEPT" if verdict == "accept" else "-j DROP"
        if not logged:
            return [" ".join([*lead, target])]
        prefix = names.log_prefix("d" if verdict == "drop" else "w", ref, names.IPT_LOG_PREFIX_MAX)
        rate = self.settings.log_rate_per_second
        limit = [f"-m limit --limit {rate}/second"] if rate > 0 else []
        nflog = f'-j NFLOG --nflog-group {self.settings.log_group} --nflog-prefix "{prefix}"'
        return [" ".join([*lead, *limit, nflog]), " ".join([*lead, target])]

    def _addresses(self, rule: plan.PlannedRule, direction: str, family: int) -> Iterator[list[str]]:
        peer_dir, local_dir = ("src", "dst") if direction == "IN" else ("dst", "src")
        peer = self._address(rule.peer, family, peer_dir)
        local = self._address(rule.local, family, local_dir)
        for p in peer:
            for q in local:
                yield [*p, *q]

    def _address(self, match: plan.AddressMatch | None, family: int, where: str) -> list[list[str]]:
        if match is None:
            return [[]]
        if match.set_name is not None:
            return [["-m set --match-set", self.set_name(match.set_name, family), where]]
        flag = "-s" if where == "src" else "-d"
        return [[flag, str(n)] for n in match.networks if n.version == family]

    @staticmethod
    def _protocols(spec: services.PortSpec | None, family: int) -> list[list[str]]:
        if spec is None or spec.protocol is services.Protocol.ANY:
            return [[]]
        if spec.protocol is services.Protocol.ICMP:
            return [["-p icmp" if family == 4 else "-p ipv6-icmp"]]
        proto = spec.protocol.value
        if not spec.ports:
            return [[f"-p {proto}"]]
        if len(spec.ports) == 1:
            return [[f"-p {proto} -m {proto} --dport {_range(spec.ports[0])}"]]
        multiport = f"-p {proto} -m multiport --dports"
        return [[f"{multiport} {','.join(map(_range, chunk))}"] for chunk in _chunks(spec.ports)]

    def _window(self, rule: plan.PlannedRule) -> list[str] | None:
        """`-m time` for [not_before, not_after); None when the rule can never match here."""
        start, stop = rule.not_before, None if rule.not_after is None else rule.not_after - 1
        if start is None and stop is None:
            return []
        if (stop is not None and stop < 0) or (start is not None and start > _XT_TIME_MAX):
            if start is not None and start > _XT_TIME_MAX:
                self.warnings.append(
                    f"{rule.ref}: time window starts after 2038; iptables cannot express it, rule left out"
                )
            return None
        parts = ["-m time"]
        if start is not None and start > 0:
            parts.append(f"--datestart {_date(start)}")
        if stop is not None:
            if stop > _XT_TIME_MAX:
                self.warnings.append(f"{rule.ref}: time window ends after 2038; iptables ends it in 2038")
            parts.append(f"--datestop {_date(min(stop, _XT_TIME_MAX))}")
        return [*parts, "--utc"]

    @staticmethod
    def _process(rule: plan.PlannedRule) -> list[str]:
        out = []
        if rule.cgroup is not None:
            out.append(f'-m cgroup --path "{rule.cgroup}"')
        if rule.uid is not None:
            out.append(f"-m owner --uid-owner {rule.uid}")
        return out


def _range(r: services.PortRange) -> str:
    return str(r.first) if r.first == r.last else f"{r.first}:{r.last}"


def _chunks(ports: tuple[services.PortRange, ...]) -> Iterator[list[services.PortRange]]:
    """multiport takes 15 slots per rule; a range takes two."""
    chunk: list[services.PortRange] = []
    used = 0
    for r in ports:
        cost = 1 if r.first == r.last else 2
        if used + cost > _MULTIPORT_SLOTS:
            yield chunk
            chunk, used = [], 0
        chunk.append(r)
        used += cost
    if chunk:
        yield chunk


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")
