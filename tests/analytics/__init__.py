"""Analytics tests: real engines over the example estate, hand-written summary rows.

The rows below describe one hour of the example estate's traffic as the agents would report it:
both ends of a managed connection report it, unmanaged and outside peers only from one side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from microseg import policyfile
from microseg.cli import loading
from microseg.engine import engine
from microseg.model import addresses, estate, rules, selectors

BUCKET = 1_780_000_000.0
"""Start of the hour the rows summarise."""


def example_estate() -> estate.Estate:
    """The example estate shipped in the package."""
    return policyfile.load([loading.examples_dir()])


def example_engine() -> engine.PolicyEngine:
    """An engine over the example estate."""
    return engine.PolicyEngine(example_estate())


def row(
    reporter: str,
    direction: str,
    src: str,
    dst: str,
    dport: int | None,
    *,
    proto: str = "tcp",
    process: str | None = None,
    verdict: str = "allowed",
    rule: str | None = None,
    connections: int = 1,
    bucket: float = BUCKET,
) -> dict[str, Any]:
    """One summary row of the agreed shape."""
    return {
        "bucket": bucket,
        "reporter": reporter,
        "direction": direction,
        "src": src,
        "dst": dst,
        "dport": dport,
        "proto": proto,
        "process": process,
        "verdict": verdict,
        "rule": rule,
        "firstSeen": bucket + 5,
        "lastSeen": bucket + 3000,
        "connections": connections,
        "bytes": 1000 * connections,
        "packets": 10 * connections,
    }


WEB1, APP1, LB1, DB1 = "10.77.1.11", "10.77.1.21", "10.77.1.10", "10.77.1.31"
DEV_WEB, DEV_APP = "10.77.2.11", "10.77.2.21"
BILLING = "10.77.9.50"
CORP_USER = "10.77.200.50"
OUTSIDE = "203.0.113.7"


def hour_of_traffic() -> list[dict[str, Any]]:
    """Web->app reported by both ends, an unmanaged peer, an IP-list user, an external address,
    dev in alert mode, and a dev->prod attempt the security tier blocks."""
    return [
        row("prod-web-1", "out", WEB1, APP1, 8443, process="nginx", connections=10),
        row("prod-app-1", "in", WEB1, APP1, 8443, process="java", connections=10),
        row("prod-app-1", "out", APP1, BILLING, 5000, process="java", connections=4),
        row("prod-lb-1", "in", CORP_USER, LB1, 443, process="haproxy", connections=7),
        row("prod-app-1", "out", APP1, OUTSIDE, 443, process="curl", verdict="would-block", connections=2),
        row("dev-web-1", "out", DEV_WEB, DEV_APP, 8443, process="nginx", connections=3),
        row("dev-app-1", "in", DEV_WEB, DEV_APP, 8443, process="java", connections=3),
        row("dev-app-1", "out", DEV_APP, DB1, 3306, process="java", verdict="blocked", connections=1),
        row("prod-db-1", "in", DEV_APP, DB1, 3306, verdict="blocked", connections=1),
    ]


def draft_engine() -> engine.PolicyEngine:
    """The draft: dev web->app and prod app->billing removed, prod app->203.0.113.7 https added."""
    base = example_estate()
    kept = tuple(r for r in base.rules if r.name not in ("dev-web-to-app", "prod-app-to-billing"))
    https = next(s for s in base.services if s.name == "https")
    to_partner = rules.Rule(
        "prod-app-to-partner",
        "application",
        160,
        rules.Action.ALLOW,
        (selectors.SelectorPeer(selectors.LabelSelector.parse("env=prod,app=crm,role=app")),),
        (selectors.CidrPeer((addresses.network(OUTSIDE + "/32"),)),),
        (https,),
    )
    return engine.PolicyEngine(replace(base, rules=(*kept, to_partner), version="draft"))
