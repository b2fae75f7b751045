"""The ruleset feed: one worker thread answers the long-polls of every agent, and the polls
that have nothing new to take wait here, not in a coroutine each.

Fed by the ruleset route (each request asks about its workload's document, saying which document
it holds and whether it takes deltas, and how long it may wait) and by the runtime's watcher
(`changed`: the state row moved); feeds the responses. When a provision wakes ten thousand
long-polls at once, ten thousand threads fighting over one engine and one interpreter lock would
each get their answer late; here the questions queue up and one worker answers them round by
round, in the order they came:

- the state row is read once per round, not once per document;
- the credentials of every poll of the round are looked up in one query (which also keeps a
  long-poll from outliving a revocation), not one query and one thread per request;
- an agent that holds a document this process still remembers gets the delta to the new one
  (`model/rulesetdelta`: the entries and set members that changed, each shared part compared
  once per round); any other gets the whole document;
- a poll whose answer is "unchanged" is parked (a future and a timer for its deadline); each
  change puts every parked poll back into one round, and only those whose document moved are
  answered. A relabel that changes 50 documents out of 10,000 wakes 50 requests, not 10,000, and
  a provision wakes each request once, with its answer.

Does not: decide what a document holds (the engine) or render HTTP (the route).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from microseg.model import ruleset, rulesetdelta
from microseg.server import auth
from microseg.server.runtime import Compiled, Runtime

log = logging.getLogger("microseg.server")
JSON = "application/json"
CHUNK = 128
"""Answers handed to the event loop at once: one wake-up of the loop per chunk, not per agent,
while the first agents' responses already go out as the worker computes the rest. The worker
hands over a chunk only once the loop has sent the one before, so no backlog of thousands of
responses builds up in the loop's queue: a request to any other endpoint waits behind one chunk
at each of its steps, not behind the whole fan-out."""
SENT_WAIT = 5.0
"""How long the worker waits for the loop to send a chunk before it checks that the loop still
runs (at shutdown it does not: the round ends there)."""


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
    whole document; or that the credential is unknown or was revoked (`revoked`). `waited`: the
    poll was parked before this answer (a revocation then ends a poll that had been let in)."""

    hash: str | None
    body: bytes = b""
    media_type: str = JSON
    revoked: bool = False
    waited: bool = False

    @property
    def final(self) -> bool:
        """Worth sending before the deadline: something to take, or a refusal."""
        return self.revoked or (self.hash is not None and bool(self.body))


@dataclass(eq=False)
class _Poll:
    """A request waiting for its answer: asked in `generation` (of `Feed.changed`), due back at
    `deadline` (the loop's clock) with its last answer when nothing changes for it."""

    ask: Ask
    future: asyncio.Future[Answer]
    deadline: float
    generation: int
    last: Answer | None = None
    timer: asyncio.TimerHandle | None = None


class Feed:
    """Queues questions, answers them from one worker thread, parks the unchanged ones."""

    def __init__(self, rt: Runtime, remember: int = 40_000) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._pending: list[_Poll] = []
        self._busy = False
        self._held: OrderedDict[str, ruleset.RulesetDocument] = OrderedDict()
        self._remember = remember
        self._differ = rulesetdelta.Differ()
        self._loop: asyncio.AbstractEventLoop | None = None
        # the rest is touched only on the event loop's thread
        self._parked: set[_Poll] = set()
        """Polls waiting for a change (`microseg_feed_waiting` counts them)."""
        self._generation = 0

    async def poll(self, ask: Ask, wait: float = 0) -> Answer:
        """The answer to `ask`: at once when there is something to take (or a refusal), else
        once a change brings something, or after `wait` seconds the last answer (unchanged or
        nothing provisioned)."""
        loop = self._loop = asyncio.get_running_loop()
        poll = _Poll(ask, loop.create_future(), loop.time() + wait, self._generation)
        self._submit(loop, [poll])
        return await poll.future

    def changed(self) -> None:
        """The state row moved (called on the event loop): every parked poll is asked again,
        all in one round."""
        self._generation += 1
        again = [p for p in self._parked if not p.future.done()]
        self._parked.clear()
        self.rt.metrics.feed_waiting = 0
        for p in again:
            p.generation = self._generation
        if again and self._loop is not None:
            self._submit(self._loop, again)

    # -- the worker (its own thread) -------------------------------------------------------

    def _submit(self, loop: asyncio.AbstractEventLoop, polls: list[_Poll]) -> None:
        with self._lock:
            self._pending.extend(polls)
            start, self._busy = not self._busy, True
        if start:
            loop.run_in_executor(None, self._drain, loop)

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
                loop.call_soon_threadsafe(_fail, batch, exc)

    def _round(self, loop: asyncio.AbstractEventLoop, batch: list[_Poll]) -> None:
        compiled = self.rt.compiled()
        live = auth.agents_by_credential(self.rt.db, list({p.ask.credential for p in batch}))
        sent: threading.Event | None = None
        for at in range(0, len(batch), CHUNK):
            done: list[tuple[_Poll, Answer]] = []
            with self.rt.engine_lock:  # once per chunk: documents, deltas and encodings
                for poll in batch[at : at + CHUNK]:
                    done.append((poll, self._answer(compiled, poll.ask, live.get(poll.ask.credential))))
            # the loop has sent the chunk before: no backlog builds up there
            if sent is not None and not sent.wait(SENT_WAIT) and not loop.is_running():
                return  # the server is stopping: nobody is left to answer
            sent = threading.Event()
            loop.call_soon_threadsafe(self._settle, loop, done, sent)

    def _answer(self, compiled: Compiled, ask: Ask, who: auth.Principal | None) -> Answer:
        if who is None:
            return Answer(None, revoked=True)
        doc = self.rt.document_locked(compiled, who.workload)
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

    # -- back on the event loop ------------------------------------------------------------

    def _settle(
        self, loop: asyncio.AbstractEventLoop, done: list[tuple[_Poll, Answer]], sent: threading.Event
    ) -> None:
        """Answered polls: sent back, parked, or asked again when a change came while the worker
        was answering (its answer may predate the change). `sent` is set once the requests woken
        here have run (their wake-ups are queued before it)."""
        now, again = loop.time(), []
        for poll, answer in done:
            if poll.future.done():  # cancelled: the server is stopping
                continue
            poll.last = answer
            if answer.final or now >= poll.deadline:
                self._finish(poll, answer)
            elif poll.generation != self._generation:
                poll.generation = self._generation
                again.append(poll)
            else:
                self._parked.add(poll)
                if poll.timer is None:
                    poll.timer = loop.call_at(poll.deadline, self._expire, poll)
        self.rt.metrics.feed_waiting = len(self._parked)
        loop.call_soon(sent.set)
        if again:
            self._submit(loop, again)

    def _expire(self, poll: _Poll) -> None:
        """The deadline of a parked poll: its last answer. A poll being asked again at its
        deadline is finished when that answer comes (`_settle`)."""
        if poll in self._parked:
            self._parked.discard(poll)
            self.rt.metrics.feed_waiting = len(self._parked)
            if not poll.future.done() and poll.last is not None:
                self._finish(poll, poll.last)

    def _finish(self, poll: _Poll, answer: Answer) -> None:
        if poll.timer is not None:
            poll.timer.cancel()
        poll.future.set_result(dataclasses.replace(answer, waited=True) if poll.timer else answer)


def _fail(batch: list[_Poll], exc: Exception) -> None:
    for poll in batch:
        if not poll.future.done():
            poll.future.set_exception(exc)
