"""The control plane: REST API under /api/v1 (FastAPI), auth and RBAC, drafts and provisioned
versions, audit, agent enrollment, the ruleset feed and flow ingestion.

The flow, one request at a time:

    HTTP -> app (middleware: size limit, problem+json) -> auth (token -> principal, role check)
         -> routes_* (one module per resource group) -> service (validate whole, then write in one
            transaction with its audit record) -> microseg.store
    agents long-poll the feed: runtime (state row -> compiled PolicyEngine per (version,
    inventory generation)) -> ruleset document, answered as soon as the agent's hash is stale.

What it deliberately does not do: keep authoritative state in memory. Every replica reads the
database; the compiled engine is a cache keyed by the state row, so a second replica stays right.
"""
