"""`--port` for every offline command: the text a person typed -> the probes to evaluate.

Reads through `services.resolve_port` (the one parser: `8080`, `8080/tcp`, `tcp/8080`,
`8000-8080/tcp`, `icmp`, or a Service of the loaded estate such as `mysql`) and expands the
result with `reachability.probes_in`. Feeds `explain` and `matrix`; does not evaluate anything.
"""

from __future__ import annotations

from microseg import errors
from microseg.engine import reachability
from microseg.model import estate, services

HELP = f"{services.PORT_SYNTAX}; e.g. 3306/tcp, tcp/8080, 8000-8080/tcp, 53/udp, icmp, mysql"


def probes(text: str, est: estate.Estate) -> list[reachability.Probe]:
    """Every probe `text` names, in order; a service matching every protocol names no port."""
    known = {s.name: s for s in est.services}
    found: dict[reachability.Probe, None] = {}  # ordered, without repeats across a service's specs
    for spec in services.resolve_port(text, known):
        if spec.protocol is services.Protocol.ANY:
            raise errors.ValidationError(
                f"port {text!r}: service matches every protocol; name a port", "port"
            )
        found.update(dict.fromkeys(reachability.probes_in(spec)))
    return list(found)
