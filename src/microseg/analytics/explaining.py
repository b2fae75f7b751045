"""One flow explained on every port a person named, in runs of ports with one verdict.

Fed by a compiled engine and the `--port` text as typed (read by `services.resolve_port`, the one
port parser, with the services of that engine's estate); feeds `microseg explain` on local files
and the server's `POST /explain`, so both give the same answer for the same policy. A range or a
service is evaluated port by port and consecutive ports with the same verdict form one run
(`8000-8079/tcp`): exact for every port asked about, and still short.

Does not: choose the engine or hold its lock (the caller does), nor limit how many ports a text
names unless told (`probes(limit=...)`: the server evaluates a bounded number).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from microseg import errors
from microseg.engine import engine, reachability
from microseg.model import estate, services, verdicts


@dataclass(frozen=True)
class Flow:
    """A flow as people write it: workload names or addresses, and a port text."""

    source: str
    destination: str
    port: str
    process: str | None = None
    client_process: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Run:
    """Consecutive ports with one verdict: the endpoints as the engine resolved them, the ports
    (`3306/tcp`, `8000-8079/tcp`, `icmp`) and the verdict."""

    source: str
    destination: str
    port: str
    verdict: verdicts.Verdict

    def summary(self) -> dict[str, str]:
        """`{"from", "to", "port"}`, as `explain` prints and answers it."""
        return {"from": self.source, "to": self.destination, "port": self.port}


def probes(text: str, est: estate.Estate, limit: int | None = None) -> list[reachability.Probe]:
    """Every probe `text` names, in order; a service matching every protocol names no port, and
    more than `limit` probes (when given) is a ValidationError naming the count."""
    known = {s.name: s for s in est.services}
    found: dict[reachability.Probe, None] = {}  # ordered, without repeats across a service's specs
    for spec in services.resolve_port(text, known):
        if spec.protocol is services.Protocol.ANY:
            raise errors.ValidationError(
                f"port {text!r}: service matches every protocol; name a port", "port"
            )
        found.update(dict.fromkeys(reachability.probes_in(spec)))
    if limit is not None and len(found) > limit:
        raise errors.ValidationError(f"port {text!r} names {len(found)} ports; at most {limit} here", "port")
    return list(found)


def runs(eng: engine.PolicyEngine, flow: Flow, asked: list[reachability.Probe]) -> list[Run]:
    """Evaluate `flow` on each probe of `asked` (from `probes`), merged into runs."""
    found: list[tuple[list[reachability.Probe], Run]] = []
    for probe in asked:
        run = evaluate(eng, flow, probe)
        last = found[-1] if found else None
        if last and _follows(last[0][-1], probe) and last[1].verdict.to_dict() == run.verdict.to_dict():
            last[0].append(probe)
        else:
            found.append(([probe], run))
    return [Run(run.source, run.destination, _run_text(probes), run.verdict) for probes, run in found]


def evaluate(eng: engine.PolicyEngine, flow: Flow, probe: reachability.Probe) -> Run:
    """The verdict for `flow` on exactly one probe."""
    proto, port = probe
    src, dst = eng.endpoint(flow.source), eng.endpoint(flow.destination)
    verdict = eng.evaluate(
        src, dst, port, proto, process=flow.process, client_process=flow.client_process, at=flow.at
    )
    return Run(str(src), str(dst), reachability.probe_text(probe), verdict)


def _follows(before: reachability.Probe, probe: reachability.Probe) -> bool:
    return before[0] is probe[0] and before[1] is not None and probe[1] == before[1] + 1


def _run_text(probes: list[reachability.Probe]) -> str:
    (proto, first), (_, last) = probes[0], probes[-1]
    if first is None or last is None or first == last:
        return reachability.probe_text(probes[0])
    return f"{services.PortRange(first, last)}/{proto.value}"
