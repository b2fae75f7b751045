"""The ruleset feed's worker: one thread answers the long-polls of every agent.

Fed by the ruleset route (each request asks about its workload's document, saying which document
it holds and whether it takes deltas); feeds the responses. When a provision wakes ten thousand
long-polls at once, ten thousand threads fighting over one engine and one interpreter lock would
each get their answer late; here the requests queue up and one worker answers them round by
round, in the order they came:

- the state row is read once per round, not once per document;
- the credentials of every poll of the round are looked up in one query (which also keeps a
  long-poll from outliving a revocation), not one query and one thread per request;
- an agent that holds a document this process still remembers gets the delta to the new one
  (`model/rulesetdelta`: the entries and set members that changed, each shared part compared
  once per round); any other gets the whole document.

Does not: decide what a document holds (the engine) or wait for changes (the route does).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from microseg.model import ruleset, rulesetdelta
from microseg.server import auth
from microseg.server.runtime import Compiled, Runtime

log = logging.getLogger("microseg.server")
JSON = "application/json"
CHUNK = 256
"""Answers handed to the event loop at once: one wake-up of the loop per chunk, not per agent,
while the first agents' responses already go out as the worker computes the rest."""


@dataclass(frozen=True)
class Ask:
    """One long-poll's question: the document of the agent holding `credential` (a digest),
    given the document it holds."""

    credential: str
    known: str | None = None
    deltas: bool = False
    """The agent accepts `rulesetdelta.MEDIA_TYPE`."""


@dataclass(frozen=True)
class Answer:
    """What to send: nothing provisioned (`hash` None), unchanged (`body` empty), a delta or a
    whole document; or that the credential is unknown or was revoked (`revoked`)."""

    hash: str | None
    body: bytes = b""
    media_type: str = JSON
    revoked: bool = False


Waiting = tuple[Ask, "asyncio.Future[Answer]"]


class Feed:
    """Queues questions and answers them from one worker thread."""

    def __init__(self, rt: Runtime, remember: int = 40_000) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._pending: list[Waiting] = []
        self._busy = False
        self._held: OrderedDict[str, ruleset.RulesetDocument] = OrderedDict()
        self._remember = remember
        self._differ = rulesetdelta.Differ()

    async def answer(self, ask: Ask) -> Answer:
        """The answer to `ask` (computed by the worker)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        with self._lock:
            self._pending.append((ask, future))
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
                self._round(loop, batch)
            except Exception as exc:  # every waiter of this round gets the error (a problem+json 500)
                log.exception("the ruleset feed failed")
                for _, future in batch:
                    loop.call_soon_threadsafe(_fail, future, exc)

    def _round(self, loop: asyncio.AbstractEventLoop, batch: list[Waiting]) -> None:
        compiled = self.rt.compiled()
        live = auth.agents_by_credential(self.rt.db, list({a.credential for a, _ in batch}))
        for at in range(0, len(batch), CHUNK):
            done: list[tuple[asyncio.Future[Answer], Answer]] = []
            with self.rt.engine_lock:  # once per chunk: documents, deltas and encodings
                for ask, future in batch[at : at + CHUNK]:
                    who = live.get(ask.credential)
                    if who is None:
                        done.append((future, Answer(None, revoked=True)))
                    else:
                        done.append((future, self._answer(compiled, ask, who.workload)))
            loop.call_soon_threadsafe(_resolve, done)
            time.sleep(0)  # a window for a request waiting on the engine lock (a listing, /metrics)

    def _answer(self, compiled: Compiled, ask: Ask, workload: str) -> Answer:
        doc = self.rt.document_locked(compiled, workload)
        if doc is None:
            return Answer(None)
        if doc.hash == ask.known:
            return Answer(doc.hash)
        held = self._held.get(ask.known) if ask.deltas and ask.known else None
        self._remember_doc(doc)
        if held is not None and held.workload == doc.workload:
            return Answer(doc.hash, self._differ.delta(held, doc).encode(), rulesetdelta.MEDIA_TYPE)
        return Answer(doc.hash, self.rt.encoder.encode(doc))

    def _remember_doc(self, doc: ruleset.RulesetDocument) -> None:
        """Keep the document an agent is about to hold, so that its next change can be a delta."""
        if doc.hash in self._held:
            self._held.move_to_end(doc.hash)
            return
        self._held[doc.hash] = doc
        while len(self._held) > self._remember:
            self._held.popitem(last=False)


def _resolve(answers: list[tuple[asyncio.Future[Answer], Answer]]) -> None:
    for future, answer in answers:
        if not future.done():  # the agent may have hung up
            future.set_result(answer)


def _fail(future: asyncio.Future[Answer], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
