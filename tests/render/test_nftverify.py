"""The nft evaluator refuses what it does not understand and walks chains like the kernel."""

from __future__ import annotations

import pytest

from microseg.model import addresses
from microseg.render import nftables, nftverify, plan
from tests.render.documents import SCENARIOS

HEAD = "table inet t\ndelete table inet t\ntable inet t {\n"


def script(*chains: str, sets: str = "") -> str:
    return HEAD + sets + "".join(chains) + "}\n"


def chain(name: str, *rules: str, hook: str | None = None) -> str:
    head = f"\t\ttype filter hook {hook} priority 0; policy accept;\n" if hook else ""
    return f"\tchain {name} {{\n{head}" + "".join(f"\t\t{r}\n" for r in rules) + "\t}\n"


def pkt(**fields: object) -> nftverify.Packet:
    values: dict[str, object] = {
        "family": 4,
        "saddr": addresses.address("10.1.1.1"),
        "daddr": addresses.address("10.2.2.2"),
        "l4proto": "tcp",
        "dport": 80,
    }
    values.update(fields)
    return nftverify.Packet(**values)  # type: ignore[arg-type]


BAD = {
    "flush instead of delete": "table inet t\nflush table inet t\n",
    "reject verdict": script(chain("input", "counter reject", hook="input")),
    "unknown match": script(chain("input", "th dport 80 accept", hook="input")),
    "unknown set": script(chain("input", "ip saddr @nope accept", hook="input")),
    "set of the other family": script(
        chain("input", "ip6 saddr @s accept", hook="input"),
        sets="\tset s {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n",
    ),
    "jump to a missing chain": script(chain("input", "jump nowhere", hook="input")),
    "jump to a base chain": script(
        chain("input", "jump output", hook="input"), chain("output", hook="output")
    ),
    "unknown ct state": script(chain("input", "ct state bogus accept", hook="input")),
    "statement after verdict": script(chain("input", "accept counter", hook="input")),
    "policy drop": HEAD + "\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n",
    "other hook": script(chain("fwd", hook="forward")),
    "meta time with <=": script(chain("input", "meta time <= 5 accept", hook="input")),
    "escaped quote": script(chain("input", 'accept comment "a\\"b"', hook="input")),
    "trailing text": script(chain("input", hook="input")) + "add rule inet t input accept\n",
    "level not matching the path": script(
        chain("input", 'socket cgroupv2 level 1 "a/b" accept', hook="input")
    ),
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_unknown_or_malformed_syntax_is_refused(text: str) -> None:
    with pytest.raises(nftverify.NftSyntaxError):
        nftverify.parse(text)


def test_jump_return_and_policy() -> None:
    text = script(
        chain("input", "jump first", "jump second", 'tcp dport 22 counter drop comment "late"', hook="input"),
        chain("first", 'tcp dport 80 counter return comment "skip"', 'counter accept comment "first"'),
        chain("second", 'tcp dport 80 counter log prefix "x" group 1 accept comment "second"'),
    )
    program = nftverify.parse(text)
    assert nftverify.evaluate(program, "input", pkt()) == nftverify.Decision("accept", "second", ("x",))
    assert nftverify.evaluate(program, "input", pkt(dport=22)) == nftverify.Decision("accept", "first")
    assert nftverify.evaluate(program, "input", pkt(l4proto="udp")).ref == "first"


def test_policy_accept_when_nothing_decides() -> None:
    program = nftverify.parse(script(chain("input", 'tcp dport 22 drop comment "x"', hook="input")))
    assert nftverify.evaluate(program, "input", pkt()) == nftverify.Decision("accept", None)


def test_every_scenario_parses_and_keeps_its_sets() -> None:
    for sc in SCENARIOS.values():
        program = nftverify.parse(nftables.render(sc.doc, sc.settings, sc.cgroups, uids=sc.uids).text)
        assert sorted(c.hook for c in program.chains.values() if c.hook) == ["input", "output"]
        assert len(program.chains) == 2 + 2 * len(set(sc.doc.tiers))
        declared = {(s.name, f) for s in sc.doc.address_sets for f in (4, 6) if plan.collapsed(s.networks, f)}
        assert len(program.sets) == len(declared)


def test_control_plane_replies_survive_a_lost_conntrack_entry_but_open_nothing() -> None:
    """With conntrack state gone, the server's answers on the agent's own connection (ACK set, from
    the control-plane port) are accepted; a new connection from that port is not."""
    scenario = SCENARIOS["enforce"]
    program = nftverify.parse(nftables.render(scenario.doc, scenario.settings).text)
    cp, local = addresses.address("10.77.250.9"), addresses.address("10.77.250.2")

    def inbound(**kw: object) -> nftverify.Decision:
        packet = nftverify.Packet(4, cp, local, "tcp", dport=45000, sport=8443, **kw)  # type: ignore[arg-type]
        return nftverify.evaluate(program, "input", packet)

    assert (inbound(ack=True).verdict, inbound(ack=True).ref) == ("accept", "system/control-plane-reply")
    assert inbound(ack=False).verdict == "drop"  # a SYN from the control plane's port opens nothing
    outbound = nftverify.Packet(4, local, cp, "tcp", dport=45000, sport=8443, ack=True)
    assert nftverify.evaluate(program, "output", outbound).verdict == "drop"  # not our address: no reply rule
