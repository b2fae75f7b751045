"""Flow upload: spooled batches to the server, oldest first, each kept until the server has it.

Fed by the spool (batches the observer put there); feeds the client's flow upload. One `step`
sends at most one batch and says how long to wait before the next: nothing after a delivery, the
server's Retry-After when it asks for patience (429 when this agent uploads too often, 503 when
its store is full), a doubling backoff while it is unreachable. A batch leaves the spool only
once stored, or once refused as it is (a 4xx other than 401/403/429: sending it again cannot
help); a throttled batch stays, and is the next one sent.

What it deliberately does not do: make batches (the daemon drains the flow table into the spool)
or bound the spool (the spool drops its oldest batches itself, and counts them).
"""

from __future__ import annotations

import logging

from microseg.agent import client as api
from microseg.agent import spool

log = logging.getLogger("microseg.agent")
IDLE = 0.5
"""Seconds between looks at an empty spool."""
BACKOFF_MIN, BACKOFF_MAX = 0.5, 10.0
UNAUTHORIZED_WAIT = 10.0
"""Seconds before a batch refused for the credential is offered again (it may be re-enrolled)."""


class Uploader:
    """One spool's batches to one server."""

    def __init__(self, batches: spool.Spool, client: api.Client) -> None:
        self.spool, self.client = batches, client
        self.backoff = BACKOFF_MIN

    def step(self) -> float:
        """Send the oldest batch if there is one; seconds to wait before the next step."""
        item = self.spool.oldest()
        if item is None:
            return IDLE
        path, data = item
        try:
            self.client.flows(data)
        except api.Throttled as exc:
            log.info("the server asked to hold flow batches for %gs: %s", exc.retry_after, exc)
            return exc.retry_after
        except api.Unreachable:
            wait, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_MAX)
            return wait
        except api.Refused as exc:
            if exc.status in (401, 403):
                return UNAUTHORIZED_WAIT
            log.error("the server refused a flow batch, dropping it: %s", exc)
        self.spool.done(path)
        self.backoff = BACKOFF_MIN
        return 0.0
