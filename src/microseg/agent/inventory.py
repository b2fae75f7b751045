"""What the agent tells the server about its host: hostname, addresses, OS, kernel and the
listening sockets with the process behind each.

Fed by the kernel (`ip -j address`, uname, /etc/os-release) and `procfs`; feeds enrollment and
heartbeats. The result is a plain dict in the server's `Inventory` shape, compared as a whole to
decide whether something changed (the daemon sends it at start and on change).
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import socket
import subprocess
from typing import Any

from microseg.agent import procfs


def addresses() -> list[str]:
    """Global addresses of the namespace's interfaces (no loopback, no link-local)."""
    done = subprocess.run(
        ["ip", "-j", "address", "show"], capture_output=True, text=True, timeout=10, check=False
    )
    found: list[str] = []
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if not (address.is_loopback or address.is_link_local):
                found.append(str(address))
    return sorted(set(found), key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')[:100]
    except OSError:
        pass
    return platform.system().lower()


def sockets() -> list[dict[str, Any]]:
    """Listening TCP and bound UDP sockets, one per (protocol, address, port), with their owner."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for s in procfs.listening():
        entry: dict[str, Any] = {"protocol": s.proto, "address": s.local, "port": s.lport}
        if s.process is not None:
            p = s.process
            entry.update(process=p.label[:300], pid=p.pid, user=p.user[:100], path=p.path, cgroup=p.cgroup)
        out.setdefault((s.proto, s.local, s.lport), entry)
    return [out[k] for k in sorted(out)]


def collect(hostname: str | None = None, kind: str = "vm") -> dict[str, Any]:
    """The inventory as the server's agent API takes it."""
    found = addresses()
    return {
        "hostname": hostname or socket.gethostname(),
        "addresses": found or ["127.0.0.1"],
        "os": os_name(),
        "kernel": os.uname().release,
        "kind": kind,
        "sockets": sockets()[:10_000],
    }
