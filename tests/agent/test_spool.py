"""The flow spool keeps batches across restarts, delivers oldest first, and loses records only
past its byte bound, counting them."""

from __future__ import annotations

import json
from pathlib import Path

from microseg.agent import spool


def _records(n: int, port: int = 80) -> list[dict[str, object]]:
    return [{"direction": "in", "src": f"10.77.1.{i}", "dst": "10.77.2.1", "dport": port, "proto": "tcp",
             "first_seen": 1.0, "last_seen": 2.0, "verdict": "allowed"} for i in range(n)]  # fmt: skip


def test_batches_come_back_oldest_first_and_survive_a_restart(tmp_path: Path) -> None:
    first = spool.Spool(tmp_path)
    ids = [first.put(_records(2, port)) for port in (1, 2, 3)]
    again = spool.Spool(tmp_path)
    assert again.pending() == 3
    seen = []
    while (item := again.oldest()) is not None:
        path, data = item
        batch = json.loads(data)
        seen.append((batch["batch_id"], batch["records"][0]["dport"]))
        again.done(path)
    assert seen == list(zip(ids, (1, 2, 3), strict=True))
    assert again.pending() == 0
    later = spool.Spool(tmp_path).put(_records(1))
    assert later not in ids


def test_a_batch_id_is_fixed_when_spooled_so_a_retry_is_the_same_batch(tmp_path: Path) -> None:
    s = spool.Spool(tmp_path)
    batch_id = s.put(_records(1))
    item = s.oldest()
    assert item is not None
    assert json.loads(item[1])["batch_id"] == batch_id
    assert json.loads(s.oldest()[1])["batch_id"] == batch_id  # type: ignore[index]


def test_past_the_bound_the_oldest_batches_are_dropped_and_counted(tmp_path: Path) -> None:
    one = len(json.dumps({"batch_id": "x" * 32, "records": _records(10)}, separators=(",", ":")))
    s = spool.Spool(tmp_path, max_bytes=3 * one + 10)
    for port in range(5):
        s.put(_records(10, port))
    assert s.pending() == 3
    assert (s.dropped_batches, s.dropped_records) == (2, 20)
    item = s.oldest()
    assert item is not None and json.loads(item[1])["records"][0]["dport"] == 2


def test_a_half_written_batch_from_a_crash_is_ignored(tmp_path: Path) -> None:
    s = spool.Spool(tmp_path)
    s.put(_records(1))
    (tmp_path / "000000000009-dead.tmp").write_bytes(b'{"batch_id": "de')
    again = spool.Spool(tmp_path)
    assert again.pending() == 1
    assert not list(tmp_path.glob("*.tmp"))
