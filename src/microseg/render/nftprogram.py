"""The parsed form of an nft script we rendered, and how a packet walks it.

Built by `nftverify.parse` from text; used by `nftverify.evaluate` (translation validation) and by
tests that look at individual rules. Evaluation is like the kernel's for one table: rules in order,
each a series of steps left to right (a failing match ends the rule, a log statement that runs is
recorded), terminal accept/drop, `jump` and `return`, and the base chain's policy (accept) at the
end. It deliberately models only our table and no conntrack beyond the state the packet carries;
`counter` is a no-op and `limit` passes unless the packet says the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from microseg.model import addresses


class NftSyntaxError(ValueError):
    """The text holds something outside the subset we render (or is malformed)."""


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow as the hooks see it. `cgroup` is the cgroup v2 path of the local
    socket (None: no socket, e.g. ICMP), `uid` its owner; `over_limit` exhausts every `limit`."""

    family: int
    saddr: addresses.Address
    daddr: addresses.Address
    l4proto: str
    dport: int | None = None
    sport: int | None = None
    ack: bool = False
    """Whether the TCP ACK flag is set (never on the first packet of a connection)."""
    ct_state: str = "new"
    time: float = 0.0
    iif: str = "eth0"
    oif: str = "eth0"
    icmp_type: int | None = None
    cgroup: str | None = None
    uid: int | None = None
    over_limit: bool = False


@dataclass(frozen=True)
class Decision:
    """The verdict, the comment of the rule that gave it (None: chain policy), and the log lines
    (prefixes) written on the way."""

    verdict: Literal["accept", "drop"]
    ref: str | None
    log_prefixes: tuple[str, ...] = ()

    @property
    def logged(self) -> bool:
        """Whether any log statement ran."""
        return bool(self.log_prefixes)


Test = Callable[[Packet], bool]


@dataclass(frozen=True)
class Match:
    """A condition; `text` is what it was parsed from."""

    text: str
    test: Test


@dataclass(frozen=True)
class Log:
    """`log prefix "..." group N`."""

    prefix: str
    group: int


@dataclass(frozen=True)
class Limit:
    """`limit rate N/second`."""

    rate: int


Step = Match | Log | Limit


@dataclass(frozen=True)
class Rule:
    """One rule: steps left to right, then the verdict (`""` = none, continue)."""

    line: int
    steps: tuple[Step, ...]
    verdict: str
    target: str | None
    comment: str | None


@dataclass
class Chain:
    """A chain; `hook` is None for regular chains."""

    name: str
    hook: str | None = None
    priority: int = 0
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Program:
    """A parsed script: `replaces` says the preamble deletes the table before defining it."""

    table: str
    replaces: bool
    defined: bool = False
    comment: str | None = None
    sets: dict[str, tuple[int, tuple[addresses.Network, ...]]] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)


def evaluate(program: Program, hook: Literal["input", "output"], packet: Packet) -> Decision:
    """The verdict of our table's `hook` base chain for `packet`."""
    base = [c for c in program.chains.values() if c.hook == hook]
    if len(base) != 1:
        raise NftSyntaxError(f"expected one base chain for hook {hook}, found {len(base)}")
    logs: list[str] = []
    result = _run(program, base[0], packet, logs, depth=0)
    verdict, ref = result if result is not None else ("accept", None)
    return Decision("accept" if verdict == "accept" else "drop", ref, tuple(logs))


def _run(
    program: Program, chain: Chain, packet: Packet, logs: list[str], depth: int
) -> tuple[str, str | None] | None:
    if depth > 16:
        raise NftSyntaxError(f"jump depth exceeded at chain {chain.name}")
    for rule in chain.rules:
        if not _steps_pass(rule, packet, logs):
            continue
        if rule.verdict in ("accept", "drop"):
            return rule.verdict, rule.comment
        if rule.verdict == "return":
            return None
        if rule.verdict == "jump" and rule.target is not None:
            result = _run(program, program.chains[rule.target], packet, logs, depth + 1)
            if result is not None:
                return result
    return None


def _steps_pass(rule: Rule, packet: Packet, logs: list[str]) -> bool:
    for step in rule.steps:
        if isinstance(step, Match) and not step.test(packet):
            return False
        if isinstance(step, Limit) and packet.over_limit:
            return False
        if isinstance(step, Log):
            logs.append(step.prefix)
    return True
