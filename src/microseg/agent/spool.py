"""A bounded on-disk spool of flow batches: what the agent saw survives a server outage and a
restart of the agent, and is delivered oldest first once the server answers again.

Fed by the daemon (`put`, one batch of records at a time); feeds the uploader (`oldest`, then
`done`). Each batch is one file written whole and renamed into place, so a crash leaves a complete
batch or none. The batch id is fixed when the batch is spooled, so a batch that reached the server
but whose answer was lost is stored once (the server ignores a batch id it has seen). The bound is
on bytes: when a new batch does not fit, the oldest batches are dropped and counted; that is the
only way records are lost, and the count is reported.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


class Spool:
    """Batches in a directory, named `<sequence>-<batch id>.json`."""

    def __init__(self, directory: str | Path, max_bytes: int = 64 << 20) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self.dropped_records = 0
        for stale in self.dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        self._seq = max((int(p.name.split("-", 1)[0]) for p in self._files()), default=0)

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0]))

    def put(self, records: list[dict[str, Any]]) -> str:
        """Spool one batch; its id."""
        batch_id = uuid.uuid4().hex
        data = json.dumps({"batch_id": batch_id, "records": records}, separators=(",", ":")).encode()
        self._make_room(len(data))
        self._seq += 1
        final = self.dir / f"{self._seq:012d}-{batch_id}.json"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        return batch_id

    def _make_room(self, size: int) -> None:
        files = self._files()
        used = sum(p.stat().st_size for p in files)
        while files and used + size > self.max_bytes:
            oldest = files.pop(0)
            used -= oldest.stat().st_size
            self.dropped_batches += 1
            self.dropped_records += len(json.loads(oldest.read_bytes())["records"])
            oldest.unlink(missing_ok=True)

    def oldest(self) -> tuple[Path, bytes] | None:
        """The oldest spooled batch (its file and JSON), or None when empty."""
        for path in self._files():
            try:
                return path, path.read_bytes()
            except FileNotFoundError:
                continue
        return None

    def done(self, path: Path) -> None:
        """The server has the batch: forget it."""
        path.unlink(missing_ok=True)

    def pending(self) -> int:
        """Batches waiting."""
        return len(self._files())
