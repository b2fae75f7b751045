"""`k8s reachability --port` reads ports with the one parser every command uses (issue 16, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microseg.cli.main import app

INVENTORY = Path(__file__).resolve().parents[2] / "src" / "microseg" / "examples" / "k8s"


def probes(*ports: str) -> tuple[int, list[str], str]:
    args = ["k8s", "reachability", "-f", str(INVENTORY), "-o", "json"]
    for port in ports:
        args += ["--port", port]
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        return result.exit_code, [], result.stderr
    data = json.loads(result.stdout)
    return 0, sorted({f"{c['port']}/{c['protocol']}" for c in data["connections"]}), result.stderr


@pytest.mark.parametrize("text", ["80", "80/tcp", "80/TCP", "tcp/80", "TCP/80"])
def test_every_way_people_write_a_port_is_the_same_probe(text: str) -> None:
    assert probes(text)[:2] == probes("80/TCP")[:2]
    assert probes(text)[1], "the example inventory has connections on 80/TCP"


def test_a_range_is_expanded_port_by_port() -> None:
    code, found, err = probes("79-81/tcp")
    assert code == 0, err
    assert set(found) <= {"79/TCP", "80/TCP", "81/TCP"} and "80/TCP" in found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80/icmp", "protocol must be TCP, UDP or SCTP"),
        ("icmp", "protocol must be TCP, UDP or SCTP"),
        ("udp", "name a port or a range"),
        ("0/tcp", "ports are 1-65535"),
        ("99999", "ports are 1-65535"),
        ("80/foo", "unknown protocol"),
        ("1-65535/tcp", "at most 1024"),
    ],
)
def test_bad_ports_are_clear_errors(text: str, message: str) -> None:
    code, _, err = probes(text)
    assert code == 2 and message in err, err
