"""/metrics speaks the Prometheus text format: agents by state, provisions, flow ingest, compile latency."""

from __future__ import annotations

import re

from tests.server.conftest import Api, ok, problem
from tests.server.estates import provision_example

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z]+="[^"]*"\})? -?[0-9.e+-]+$')


def test_metrics_cover_agents_provisions_ingest_and_compiles(api: Api) -> None:
    provision_example(api)
    ok(api.post("/explain", {"from": "prod-web-1", "to": "prod-db-1", "port": "3306/tcp"}))
    response = api.client.get("/metrics", headers=api.headers())
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain; version=0.0.4"
    )
    lines = response.text.strip().splitlines()
    samples = [line for line in lines if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), [line for line in samples if not SAMPLE.match(line)]
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in samples}
    assert values["microseg_provisions_total"] == 1
    assert values['microseg_agents{state="in sync"}'] == 0
    assert values["microseg_compile_seconds_count"] >= 1 and values["microseg_compile_seconds_sum"] > 0
    assert "microseg_flow_ingest_records_per_second" in values
    assert {line.split()[2] for line in lines if line.startswith("# TYPE")} >= {
        "microseg_agents", "microseg_provisions_total", "microseg_compile_seconds",
        "microseg_flow_records_ingested_total"}  # fmt: skip
    problem(api.client.get("/metrics"), 401)
