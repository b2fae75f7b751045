"""`--port` for every offline command: the text a person typed -> the probes to evaluate.

Reads through `analytics.explaining.probes` (the one parser `services.resolve_port`: `8080`,
`8080/tcp`, `tcp/8080`, `8000-8080/tcp`, `icmp`, or a Service of the loaded estate such as
`mysql`, expanded port by port), the same reading the server's `/explain` uses. Feeds `explain`
and `matrix`; does not evaluate anything.
"""

from __future__ import annotations

from microseg.analytics import explaining
from microseg.engine import reachability
from microseg.model import estate, services

HELP = f"{services.PORT_SYNTAX}; e.g. 3306/tcp, tcp/8080, 8000-8080/tcp, 53/udp, icmp, mysql"


def probes(text: str, est: estate.Estate) -> list[reachability.Probe]:
    """Every probe `text` names, in order; a service matching every protocol names no port."""
    return explaining.probes(text, est)
