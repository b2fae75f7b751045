"""The ruleset feed's worker: one thread computes the documents long-polling agents wait for.

Fed by the ruleset route (each request asks for its workload's document); feeds the responses.
When a provision wakes a thousand long-polls at once, a thousand threads fighting over one engine
and one interpreter lock would each get their document late; here the requests queue up and one
worker answers them in the order they came, reading the state row once per round rather than once
per document, so the first agents are answered at once and the rest stream out behind them.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from microseg.server.runtime import Runtime

log = logging.getLogger("microseg.server")
Answer = tuple[str, bytes] | None
"""(hash, JSON bytes) of a document, or None: nothing provisioned, or no such managed workload."""


class Feed:
    """Queues document requests and answers them from one worker thread."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._pending: list[tuple[str, asyncio.Future[Answer]]] = []
        self._busy = False

    async def document(self, workload: str) -> Answer:
        """The current document of `workload` (computed by the worker)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        with self._lock:
            self._pending.append((workload, future))
            start, self._busy = not self._busy, True
        if start:
            loop.run_in_executor(None, self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._busy = False
                    return
            try:
                self.rt.compiled()
                for workload, future in batch:
                    answer = self.rt.document_json(workload, refresh=False)
                    loop.call_soon_threadsafe(_resolve, future, answer)
            except Exception as exc:  # every waiter of this round gets the error (a problem+json 500)
                log.exception("the ruleset feed failed")
                for _, future in batch:
                    loop.call_soon_threadsafe(_fail, future, exc)


def _resolve(future: asyncio.Future[Answer], answer: Answer) -> None:
    if not future.done():  # the agent may have hung up
        future.set_result(answer)


def _fail(future: asyncio.Future[Answer], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
