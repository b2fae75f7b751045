"""An evaluator for the nft scripts we render: translation validation from the text itself.

Fed by the *text* `nftables.render` produced (not by its inputs), so a renderer bug shows up as a
disagreement with `semantics.decide`. `parse` reads exactly the subset of nft syntax we emit -- the
replace preamble, one `table inet`, interval sets with elements, base and regular chains and every
rule form the renderer writes -- and raises `NftSyntaxError` on anything else, so that a new rule
form cannot escape verification. `evaluate` (in `nftprogram`) walks the chains for one packet.

It does not check what the kernel would accept (the tests run `nft -c` for that), and it parses no
syntax we do not emit, even where nft would accept it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from microseg.model import addresses
from microseg.render import nftables, nftprogram

NftSyntaxError = nftprogram.NftSyntaxError
Packet = nftprogram.Packet
Decision = nftprogram.Decision
Program = nftprogram.Program
evaluate = nftprogram.evaluate

ND_TYPE_NUMBERS = dict(zip(nftables.ND_TYPES, (130, 131, 132, 133, 134, 135, 136, 143), strict=True))
"""The ICMPv6 type names the renderer emits, by number."""

CT_STATES = frozenset({"new", "established", "related", "invalid", "untracked"})
L4PROTOS = frozenset({"tcp", "udp", "sctp", "icmp", "ipv6-icmp"})

_TOKEN = re.compile(
    r'(?P<str>"[^"\\\n]*")|(?P<nl>\n)|(?P<punct>[{},;])|(?P<word>[^\s{},;"]+)|(?P<ws>[ \t]+)|(?P<bad>.)'
)


@dataclass(frozen=True)
class Token:
    """A word, a quoted string (with its quotes), punctuation or a newline."""

    value: str
    line: int


def tokenize(text: str) -> list[Token]:
    """Tokens with line numbers; raises on characters we never emit."""
    out: list[Token] = []
    line = 1
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "bad":
            raise NftSyntaxError(f"line {line}: unexpected character {m.group()!r}")
        if kind != "ws":
            out.append(Token(m.group(), line))
        if kind == "nl":
            line += 1
    return out


class Parser:
    """Recursive descent over the token list; each method consumes what it understands."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.set_refs: list[tuple[int, str, int]] = []
        self.jumps: list[tuple[int, str]] = []

    @property
    def line(self) -> int:
        """Line of the current token."""
        return self.tokens[min(self.pos, len(self.tokens) - 1)].line if self.tokens else 0

    def error(self, message: str) -> NftSyntaxError:
        """An error pointing at the current line."""
        return NftSyntaxError(f"line {self.line}: {message}")

    def peek(self) -> str:
        """The next value, or "" at the end."""
        return self.tokens[self.pos].value if self.pos < len(self.tokens) else ""

    def take(self, *expected: str) -> str:
        """Consume one token, which must be one of `expected` when given."""
        value = self.peek()
        if not value or (expected and value not in expected):
            raise self.error(f"expected {' or '.join(map(repr, expected)) or 'a token'}, found {value!r}")
        self.pos += 1
        return value

    def words(self, *expected: str) -> None:
        """Consume a fixed sequence of tokens."""
        for word in expected:
            self.take(word)

    def string(self) -> str:
        """A quoted string, without its quotes."""
        value = self.take()
        if len(value) < 2 or value[0] != '"' or value[-1] != '"':
            raise self.error(f"expected a quoted string, found {value!r}")
        return value[1:-1]

    def integer(self) -> int:
        """A decimal integer, maybe negative."""
        value = self.take()
        if not re.fullmatch(r"-?[0-9]+", value):
            raise self.error(f"expected an integer, found {value!r}")
        return int(value)

    def skip_newlines(self) -> None:
        """Blank lines are free between blocks and inside braces."""
        while self.peek() == "\n":
            self.pos += 1

    def braced(self) -> list[str]:
        """`{ a, b, ... }` (newlines and a trailing comma allowed) or one bare value."""
        if self.peek() != "{":
            return [self.take()]
        self.take("{")
        items: list[str] = []
        self.skip_newlines()
        while self.peek() != "}":
            items.append(self.take())
            self.skip_newlines()
            if self.peek() == ",":
                self.take(",")
                self.skip_newlines()
            elif self.peek() != "}":
                raise self.error(f"expected ',' or '}}', found {self.peek()!r}")
        self.take("}")
        if not items:
            raise self.error("empty anonymous set")
        return items


def parse(text: str) -> Program:
    """Parse a script `nftables.render` or `nftables.render_delete` produced."""
    p = Parser(text)
    p.skip_newlines()
    p.words("table", "inet")
    program = Program(table=p.take(), replaces=False)
    p.words("\n", "delete", "table", "inet", program.table, "\n")
    program.replaces = True
    p.skip_newlines()
    if p.peek():
        p.words("table", "inet", program.table, "{", "\n")
        _table_body(p, program)
        program.defined = True
        p.skip_newlines()
    if p.peek():
        raise p.error(f"unexpected {p.peek()!r} after the table")
    _check_references(p, program)
    return program


def _check_references(p: Parser, program: Program) -> None:
    for line, name, family in p.set_refs:
        if name not in program.sets:
            raise NftSyntaxError(f"line {line}: unknown set @{name}")
        if program.sets[name][0] != family:
            raise NftSyntaxError(f"line {line}: set @{name} is not an IPv{family} set")
    for line, target in p.jumps:
        chain = program.chains.get(target)
        if chain is None or chain.hook is not None:
            raise NftSyntaxError(f"line {line}: jump to {target}, which is not a regular chain of ours")


def _table_body(p: Parser, program: Program) -> None:
    while True:
        p.skip_newlines()
        keyword = p.take("comment", "set", "chain", "}")
        if keyword == "}":
            p.take("\n")
            return
        if keyword == "comment":
            program.comment = p.string()
            p.take("\n")
        elif keyword == "set":
            _set(p, program)
        else:
            _chain(p, program)


def _set(p: Parser, program: Program) -> None:
    name = p.take()
    if name in program.sets:
        raise p.error(f"set {name} defined twice")
    p.words("{", "\n", "type")
    family = 4 if p.take("ipv4_addr", "ipv6_addr") == "ipv4_addr" else 6
    p.words("\n", "flags", "interval", "\n")
    members: tuple[addresses.Network, ...] = ()
    if p.peek() == "elements":
        p.words("elements", "=")
        members = tuple(_network(p, value, family) for value in p.braced())
        p.take("\n")
    p.words("}", "\n")
    program.sets[name] = (family, members)


def _chain(p: Parser, program: Program) -> None:
    chain = nftprogram.Chain(p.take())
    if chain.name in program.chains:
        raise p.error(f"chain {chain.name} defined twice")
    p.words("{", "\n")
    if p.peek() == "type":
        p.words("type", "filter", "hook")
        chain.hook = p.take("input", "output")
        p.take("priority")
        chain.priority = p.integer()
        p.words(";", "policy", "accept", ";", "\n")
    while p.peek() != "}":
        chain.rules.append(_rule(p, program))
    p.words("}", "\n")
    program.chains[chain.name] = chain


def _rule(p: Parser, program: Program) -> nftprogram.Rule:
    line = p.line
    steps: list[nftprogram.Step] = []
    verdict, target, comment = "", None, None
    while p.peek() != "\n":
        word = p.take()
        if word == "comment":
            comment = p.string()
            break
        if verdict:
            raise p.error(f"{word!r} after the verdict")
        if word in _MATCHERS:
            steps.append(nftprogram.Match(word, _MATCHERS[word](p, program)))
        elif word == "counter":
            continue
        elif word == "log":
            p.take("prefix")
            prefix = p.string()
            p.take("group")
            steps.append(nftprogram.Log(prefix, p.integer()))
        elif word == "limit":
            p.take("rate")
            rate = p.take()
            if not re.fullmatch(r"[1-9][0-9]*/second", rate):
                raise p.error(f"unexpected rate {rate!r}")
            steps.append(nftprogram.Limit(int(rate.split("/")[0])))
        elif word in ("accept", "drop", "return"):
            verdict = word
        elif word == "jump":
            verdict, target = word, p.take()
            p.jumps.append((line, target))
        else:
            raise p.error(f"unknown rule element {word!r}")
    p.take("\n")
    return nftprogram.Rule(line, tuple(steps), verdict, target, comment)


Test = nftprogram.Test


def _iface(field: str) -> Callable[[Parser, Program], Test]:
    def parse_iface(p: Parser, program: Program) -> Test:
        name = p.string()
        return lambda pkt: getattr(pkt, field) == name

    return parse_iface


def _ct(p: Parser, program: Program) -> Test:
    p.take("state")
    states = {p.take()}
    while p.peek() == ",":
        p.take(",")
        states.add(p.take())
    if not states <= CT_STATES:
        raise p.error(f"unknown ct states {sorted(states - CT_STATES)}")
    return lambda pkt: pkt.ct_state in states


def _meta(p: Parser, program: Program) -> Test:
    key = p.take("nfproto", "l4proto", "time", "skuid")
    if key == "nfproto":
        family = 4 if p.take("ipv4", "ipv6") == "ipv4" else 6
        return lambda pkt: pkt.family == family
    if key == "l4proto":
        negate = p.peek() == "!="
        if negate:
            p.take("!=")
        protos = set(p.braced())
        if not protos <= L4PROTOS:
            raise p.error(f"unknown protocols {sorted(protos - L4PROTOS)}")
        return lambda pkt: (pkt.l4proto in protos) != negate
    if key == "time":
        op = p.take(">=", "<")
        moment = p.integer()
        return (lambda pkt: pkt.time >= moment) if op == ">=" else (lambda pkt: pkt.time < moment)
    uid = p.integer()
    return lambda pkt: pkt.uid == uid


def _ip(family: int) -> Callable[[Parser, Program], Test]:
    def parse_ip(p: Parser, program: Program) -> Test:
        field = p.take("saddr", "daddr")
        if p.peek().startswith("@"):
            name = p.take()[1:]
            p.set_refs.append((p.line, name, family))
            return lambda pkt: (
                pkt.family == family and addresses.contains(program.sets[name][1], _addr(pkt, field))
            )
        nets = tuple(_network(p, value, family) for value in p.braced())
        return lambda pkt: pkt.family == family and addresses.contains(nets, _addr(pkt, field))

    return parse_ip


def _addr(pkt: Packet, field: str) -> addresses.Address:
    return pkt.saddr if field == "saddr" else pkt.daddr


def _ports(proto: str) -> Callable[[Parser, Program], Test]:
    def parse_ports(p: Parser, program: Program) -> Test:
        field = p.take("dport", "sport", "flags")
        if field == "flags":  # only the form we emit: `tcp flags & ack == ack`
            p.words("&", "ack", "==", "ack")
            return lambda pkt: pkt.l4proto == proto and pkt.ack
        ranges = [_port_range(p, value) for value in p.braced()]

        def test(pkt: Packet) -> bool:
            port = pkt.dport if field == "dport" else pkt.sport
            return pkt.l4proto == proto and port is not None and any(lo <= port <= hi for lo, hi in ranges)

        return test

    return parse_ports


def _port_range(p: Parser, value: str) -> tuple[int, int]:
    m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", value)
    if not m:
        raise p.error(f"bad port {value!r}")
    lo = int(m.group(1))
    hi = int(m.group(2) or lo)
    if not 0 < lo <= hi <= 65535:
        raise p.error(f"bad port range {value!r}")
    return lo, hi


def _icmpv6(p: Parser, program: Program) -> Test:
    p.take("type")
    names = p.braced()
    if not set(names) <= ND_TYPE_NUMBERS.keys():
        raise p.error(f"unexpected icmpv6 types {names}")
    numbers = {ND_TYPE_NUMBERS[n] for n in names}
    return lambda pkt: pkt.family == 6 and pkt.l4proto == "ipv6-icmp" and pkt.icmp_type in numbers


def _socket(p: Parser, program: Program) -> Test:
    p.words("cgroupv2", "level")
    level = p.integer()
    path = p.string().split("/")
    if level != len(path):
        raise p.error(f"cgroupv2 level {level} does not fit path depth {len(path)}")
    return lambda pkt: pkt.cgroup is not None and pkt.cgroup.split("/")[:level] == path


def _network(p: Parser, value: str, family: int) -> addresses.Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise p.error(f"bad address {value!r}") from exc
    if net.version != family:
        raise p.error(f"{value} is not IPv{family}")
    return net


_MATCHERS: dict[str, Callable[[Parser, Program], Test]] = {
    "iif": _iface("iif"),
    "oif": _iface("oif"),
    "ct": _ct,
    "meta": _meta,
    "ip": _ip(4),
    "ip6": _ip(6),
    "tcp": _ports("tcp"),
    "udp": _ports("udp"),
    "sctp": _ports("sctp"),
    "icmpv6": _icmpv6,
    "socket": _socket,
}
