"""Real connections agree with the engine: the example estate is compiled, the production
database's ruleset is loaded with nft inside an `ms-` namespace holding the database's address, and
connections from other workloads' addresses succeed exactly when the engine's verdict allows them.
Then the app server's own ruleset is loaded on the client side to check egress the same way."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from microseg import settings
from microseg.cli import loading
from microseg.engine import engine
from microseg.model import services
from microseg.render import nftables
from tests.render import netns

PORTS = (3306, 22, 8080, 9100)
SOURCES = ("prod-app-1", "prod-web-1", "dev-web-1", "bastion-1", "prometheus-1", "10.77.123.45")


@pytest.fixture
def estate_lab(lab: netns.Lab) -> Iterator[tuple[netns.Lab, engine.PolicyEngine]]:
    eng = loading.build(None, example=True)
    server = eng.workload("prod-db-1").addresses[0]
    clients = [eng.endpoint(s).address for s in SOURCES]
    if_a = _ifname(lab, lab.a)
    if_b = _ifname(lab, lab.b)
    lab.run(lab.b, "ip", "addr", "add", f"{server}", "dev", if_b)
    lab.run(lab.a, "ip", "route", "add", f"{server}", "dev", if_a)
    for client in clients:
        lab.run(lab.a, "ip", "addr", "add", f"{client}/32", "dev", if_a)
        lab.run(lab.b, "ip", "route", "add", f"{client}/32", "dev", if_b)
    lab.serve(lab.b, str(server.network_address), tcp=PORTS)
    yield lab, eng


def _ifname(lab: netns.Lab, ns: str) -> str:
    out = lab.run(ns, "ip", "-o", "link", "show", "type", "veth").stdout
    return out.split(":")[1].strip().split("@")[0]


def connect_from(lab: netns.Lab, source: str, target: str, port: int) -> str:
    """`open` or `timeout`/`refused`/`eperm` for a TCP connection bound to `source`."""
    with contextlib.closing(lab.open_socket(lab.a, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        s.bind((source, 0))
        try:
            s.connect((target, port))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except PermissionError:
            return "eperm"
        return "open" if netns.echoes(s) else "no-echo"


@pytest.mark.netns
def test_database_ingress_matches_engine(estate_lab: tuple[netns.Lab, engine.PolicyEngine]) -> None:
    lab, eng = estate_lab
    db = eng.endpoint("prod-db-1")
    lab.nft(lab.b, nftables.render(eng.document("prod-db-1"), settings.RenderSettings()).text)
    flows = [(name, port) for name in SOURCES for port in PORTS]

    def attempt(flow: tuple[str, int]) -> tuple[str, str | None, str]:
        src = eng.endpoint(flow[0])
        verdict = eng.evaluate(src, db, flow[1], services.Protocol.TCP)
        return (
            verdict.decision.value,
            verdict.rule,
            connect_from(lab, str(src.address), str(db.address), flow[1]),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = dict(zip(flows, pool.map(attempt, flows), strict=True))
    mismatches = {k: v for k, v in seen.items() if (v[0] == "allow") != (v[2] == "open")}
    assert not mismatches, mismatches
    assert seen[("prod-app-1", 3306)][2] == "open" and seen[("prod-web-1", 3306)][2] == "timeout"
    assert (
        seen[("bastion-1", 22)][2] == "open"
        and seen[("dev-web-1", 3306)][1] == "security/dev-never-reaches-prod"
    )


@pytest.mark.netns
def test_client_egress_matches_engine(estate_lab: tuple[netns.Lab, engine.PolicyEngine]) -> None:
    """With no ruleset on the database, the app server's own egress rules decide."""
    lab, eng = estate_lab
    app, db = eng.endpoint("prod-app-1"), eng.endpoint("prod-db-1")
    lab.nft(lab.a, nftables.render(eng.document("prod-app-1"), settings.RenderSettings()).text)
    for port in PORTS:
        verdict = eng.evaluate(app, db, port, services.Protocol.TCP)
        got = connect_from(lab, str(app.address), str(db.address), port)
        assert (verdict.decision.value == "allow") == (got == "open"), (port, verdict.reason, got)
