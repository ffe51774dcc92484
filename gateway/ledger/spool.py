"""The ledger's local spool: rows the database could not take yet, kept on disk in order.

Each writer appends JSON lines to a file of its own (``ledger-<id>.spool`` in ``spool_dir``),
held under an exclusive ``flock`` while the process lives. Files left by a process that is gone
(a restart, a crash) are unlocked, so the next writer that starts or reconnects adopts them and
replays them, oldest first. Rows are keyed by request id, so replaying a file twice (a crash
between the insert and the truncate) never double-counts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from gateway.ledger.row import LedgerRow, from_json_list

__all__ = ["Spool"]

log = logging.getLogger("gateway.ledger")

SUFFIX = ".spool"


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / f"ledger-{uuid.uuid4().hex}{SUFFIX}"
        self._fh: IO[bytes] | None = None
        self.rows = 0  # rows in our own file not yet replayed
        self.oldest_ts: float | None = None  # of those rows

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "ab")  # noqa: SIM115 - held open for the writer's life
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fh = fh
        return self._fh

    def append(self, rows: list[LedgerRow], *, sync: bool = True) -> None:
        """Append rows durably (``sync``: fsync before returning)."""
        if not rows:
            return
        fh = self._open()
        fh.write(b"".join(orjson.dumps(list(r)) + b"\n" for r in rows))
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
        if self.oldest_ts is None:
            self.oldest_ts = rows[0].ts
        self.rows += len(rows)

    def adopt_orphans(self) -> list[tuple[Path, IO[bytes]]]:
        """Spool files of processes that are gone, locked by us now, oldest first."""
        if not self.dir.is_dir():
            return []
        found: list[tuple[float, Path, IO[bytes]]] = []
        for p in self.dir.glob(f"ledger-*{SUFFIX}"):
            if p == self.path:
                continue
            try:
                fh = open(p, "rb")  # noqa: SIM115 - closed by release()
            except FileNotFoundError:  # another writer adopted and finished it meanwhile
                continue
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer's file
                fh.close()
                continue
            if not p.exists():  # replayed and removed between our glob and our lock
                fh.close()
                continue
            found.append((p.stat().st_mtime, p, fh))
        found.sort(key=lambda x: x[0])
        return [(p, fh) for _, p, fh in found]

    @staticmethod
    def read(fh: IO[bytes], batch: int) -> Iterator[list[LedgerRow]]:
        """Rows of an open spool file from its start, in batches (a torn last line is skipped)."""
        fh.seek(0)
        out: list[LedgerRow] = []
        for line in fh:
            if not line.endswith(b"\n"):
                log.warning("ledger spool: skipping a torn last line (%d bytes)", len(line))
                break
            try:
                out.append(from_json_list(orjson.loads(line)))
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                log.error("ledger spool: skipping an unreadable line: %s", exc)
                continue
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out

    def own_reader(self) -> IO[bytes] | None:
        if self.rows == 0 or self._fh is None:
            return None
        return open(self.path, "rb")  # noqa: SIM115 - the caller closes it

    def clear_own(self) -> None:
        """Everything in our file is in the database: start it afresh."""
        if self._fh is not None:
            self._fh.truncate(0)
            self._fh.seek(0)
        self.rows = 0
        self.oldest_ts = None

    @staticmethod
    def release(path: Path, fh: IO[bytes], *, replayed: bool) -> None:
        if replayed:
            path.unlink(missing_ok=True)
        fh.close()

    def close(self) -> None:
        if self._fh is not None:
            empty = self.rows == 0
            self._fh.close()
            self._fh = None
            if empty:
                self.path.unlink(missing_ok=True)
