"""The lab's network: a bridge in the root namespace and one namespace per host, joined by veths.

    root namespace: bridge <prefix>0 (10.77.0.1/16) --- <prefix>-h<N> ==veth== ms-eth0 (10.77.x.y/16)
                                                                               in netns <prefix>-<host>

Fed by the runner (names from `LabNames`, addresses from the topology); feeds `down` the lists of
what exists. Safety is enforced here, not trusted to callers: every namespace and link name starts
with `ms-` and fits 15 characters where it is a link, every address is inside 10.77.0.0/16, IPv6 is
off inside each host (set with `nsenter --net`, so only the host's own sysctls change) and the
root-side links get no IPv6 address (`addrgenmode none`: a link attribute, no root sysctl). The
root namespace's firewall and sysctls are never touched.

What it deliberately does not do: start processes or decide names.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from microseg import errors
from microseg.lab import options, topology

NETNS_DIR = Path("/run/netns")
_PREFIX = "ms-"


def run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure raises a PermanentError carrying its stderr."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.PermanentError(f"{' '.join(cmd)}: {exc}") from exc
    if check and done.returncode != 0:
        raise errors.PermanentError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _link(name: str) -> str:
    if not name.startswith(_PREFIX) or len(name) > 15:
        raise errors.PermanentError(
            f"refusing link name {name!r}: lab links start with ms- and fit 15 characters"
        )
    return name


def _netns(name: str) -> str:
    if not name.startswith(_PREFIX) or "/" in name:
        raise errors.PermanentError(f"refusing namespace name {name!r}: lab namespaces start with ms-")
    return name


def _address(address: str) -> str:
    if ipaddress.ip_interface(address).ip not in topology.LAB_NETWORK:
        raise errors.PermanentError(
            f"refusing address {address}: lab addresses are inside {topology.LAB_NETWORK}"
        )
    return address


def in_netns(netns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run `cmd` inside lab namespace `netns` (setns via nsenter, which keeps /sys as it is)."""
    return run("nsenter", f"--net={NETNS_DIR / _netns(netns)}", *cmd)


def check_free(names: options.LabNames) -> None:
    """Refuse to start when an interface outside this lab holds an address in the lab network, or a
    route covers it: two bridges with 10.77.0.1 would break both labs."""
    shown = json.loads(run("ip", "-j", "-4", "addr", "show").stdout or "[]")
    for link in shown:
        for info in link.get("addr_info", []):
            net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if net.overlaps(topology.LAB_NETWORK) and not names.owns_link(link["ifname"]):
                raise errors.UserError(
                    f"{info['local']}/{info['prefixlen']} on {link['ifname']} overlaps the lab network "
                    f"{topology.LAB_NETWORK}: is another lab up? (`microseg lab down --prefix ...`)"
                )


def create_bridge(names: options.LabNames) -> None:
    """The bridge with the lab's gateway address (where the control plane listens)."""
    bridge = _link(names.bridge)
    run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "link", "set", bridge, "addrgenmode", "none")
    run("ip", "addr", "add", _address(f"{topology.GATEWAY}/{topology.LAB_NETWORK.prefixlen}"), "dev", bridge)
    run("ip", "link", "set", bridge, "up")


def create_namespace(netns: str) -> None:
    """An empty namespace with IPv6 off and loopback up."""
    run("ip", "netns", "add", _netns(netns))
    in_netns(
        netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"
    )
    run("ip", "-n", netns, "link", "set", "lo", "up")


def attach(netns: str, veth: str, address: str, bridge: str) -> None:
    """A veth from the bridge into `netns`, carrying the host's address."""
    inner = _link(options.INNER_INTERFACE)
    run("ip", "link", "add", _link(veth), "type", "veth", "peer", "name", inner, "netns", _netns(netns))
    run("ip", "link", "set", veth, "addrgenmode", "none")
    run("ip", "link", "set", veth, "master", _link(bridge), "up")
    run(
        "ip",
        "-n",
        netns,
        "addr",
        "add",
        _address(f"{address}/{topology.LAB_NETWORK.prefixlen}"),
        "dev",
        inner,
    )
    run("ip", "-n", netns, "link", "set", inner, "up")


def namespaces(names: options.LabNames) -> list[str]:
    """This lab's namespaces that exist now."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if names.owns_netns(n))


def links(names: options.LabNames) -> list[str]:
    """This lab's links in the root namespace that exist now."""
    shown = json.loads(run("ip", "-j", "link", "show").stdout or "[]")
    return sorted(link["ifname"] for link in shown if names.owns_link(link["ifname"]))


def netns_inodes(netns_names: Iterable[str]) -> set[int]:
    """The namespace identities behind names (to recognise processes inside them)."""
    found = set()
    for name in netns_names:
        try:
            found.add(os.stat(NETNS_DIR / _netns(name)).st_ino)
        except OSError:
            continue
    return found


def remove(names: options.LabNames, recorded_netns: Iterable[str]) -> None:
    """Delete the lab's namespaces (recorded ones and any found by name) and links, then wait until
    the kernel has really removed them: namespace teardown, which takes the veths with it, is
    asynchronous."""
    for netns in sorted({*recorded_netns, *namespaces(names)}):
        if names.owns_netns(netns) and (NETNS_DIR / netns).exists():
            run("ip", "netns", "del", _netns(netns), check=False)
    deadline = time.monotonic() + 10
    while left := links(names):
        if time.monotonic() > deadline:
            raise errors.TransientError(f"lab links still exist after deleting them: {', '.join(left)}")
        for name in left:
            run("ip", "link", "del", _link(name), check=False)  # may race the namespace's own teardown
        time.sleep(0.1)
