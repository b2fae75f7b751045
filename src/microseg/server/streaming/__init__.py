"""SIEM streaming: events, audit records and flow records to syslog, webhooks and JSON-lines files.

    settings.streams --specs--> SinkSpec --sinks.open_sink--> Sink
                                   |                            ^
    events / audit / flow batches --store.streams.read--> Streamer (a thread per sink:
    (by id, in the database)        cursor + lease rows      cursor, lease, backoff, bound)
                                                                |
                                            items.Item --formats--> rfc5424 | cef | json

`configure` parses every sink at start-up (a bad URL stops the server with a message naming the
setting); `Streaming.run` is the lifespan task that starts one thread per sink and stops them on
shutdown. See docs/siem.md for what is guaranteed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from microseg.server import config
from microseg.server.streaming import sinks, specs, streamer
from microseg.store import database

JOIN_TIMEOUT = 4.0
"""Seconds shutdown waits for the streamers (sends time out sooner; the server allows 5)."""


@dataclass
class Streaming:
    """The streamers of one server process."""

    streamers: list[streamer.Streamer]
    stop: threading.Event = field(default_factory=threading.Event)

    async def run(self) -> None:
        """Stream until cancelled (a lifespan task), then stop every streamer."""
        threads = [
            threading.Thread(target=s.run, args=(self.stop,), name=f"stream {s.spec.name}", daemon=True)
            for s in self.streamers
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self.stop.set()
            await asyncio.to_thread(_join, threads)


def configure(settings: config.ServerSettings, db: database.Database) -> Streaming:
    """The streamers of the configured sinks (UserError, naming the setting, for a bad one)."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    found = specs.parse_all(settings.streams)
    return Streaming([streamer.Streamer(spec, sinks.open_sink(spec), db, holder) for spec in found])


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT / max(1, len(threads)))
