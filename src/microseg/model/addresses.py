"""IP addresses and networks as the model uses them: always networks, v4 or v6.

A host address is a /32 (or /128) network so that workloads known by CIDR (unmanaged devices,
subnets) and single hosts share one type.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from microseg.errors import ValidationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def network(text: str) -> Network:
    """Parse `10.0.0.1`, `10.0.0.0/24` or an IPv6 form into a network; host bits must be zero."""
    try:
        return ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as exc:
        raise ValidationError(f"{text!r} is not an IP address or CIDR ({exc})") from exc


def address(text: str) -> Address:
    """Parse one IP address."""
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError as exc:
        raise ValidationError(f"{text!r} is not an IP address") from exc


def exclude(cidrs: Iterable[Network], excepts: Iterable[Network]) -> list[Network]:
    """`cidrs` minus `excepts`, as a minimal sorted list of networks."""
    remaining = list(collapse(cidrs))
    for cut in excepts:
        nxt: list[Network] = []
        for net in remaining:
            if net.version != cut.version or not net.overlaps(cut):
                nxt.append(net)
            elif cut.supernet_of(net):  # type: ignore[arg-type]
                continue
            else:
                nxt.extend(net.address_exclude(cut))  # type: ignore[arg-type]
        remaining = nxt
    return collapse(remaining)


def collapse(nets: Iterable[Network]) -> list[Network]:
    """Merge overlapping and adjacent networks; v4 first, then v6, each sorted."""
    every = list(nets)
    v4 = [n for n in every if n.version == 4]
    v6 = [n for n in every if n.version == 6]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def contains(nets: Iterable[Network], addr: Address) -> bool:
    """Whether `addr` lies in any of `nets`."""
    return any(addr in n for n in nets)
