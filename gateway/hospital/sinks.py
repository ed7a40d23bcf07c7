"""Where the hospital side puts accepted Bundles, and what it remembers of them; every call takes
a batch, so that one durable step covers many Bundles (the receiver acknowledges them after it).

- :class:`DirectorySink`: ``<dir>/<bundle id>.json``, the bytes as received, written atomically:
  temporary files written and fsynced side by side (the filesystem commits them together),
  renames, one fsync of the directory. Writing a Bundle again changes nothing.
- :class:`FhirSink`: a POST of each transaction Bundle to a FHIR server (its conditional creates
  absorb a duplicate).
- :class:`SeenBundles`: the ids already accepted, in SQLite (WAL; several receivers on one host
  may share the file), looked up and added a batch at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, TypeVar

from gateway.forward.errors import ErrorClass, PermanentDeliveryError, TransientDeliveryError
from gateway.forward.https import FhirClient

T = TypeVar("T")
WRITE_THREADS: Final = 8
FILE_MODE: Final = 0o666  # as open() makes files: less the umask
Item = tuple[str, bytes]  # (bundle id, payload)


class Sink(Protocol):
    """Where accepted Bundles go. Returns the ids it refused for good, with the reason; raises
    TransientDeliveryError for the batch to be retried (a sink must take a retry calmly)."""

    async def deliver_many(self, items: Sequence[Item]) -> dict[str, str]: ...


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, payload: bytes) -> None:
    """Create ``path`` with ``payload`` and fsync it (one thread of the sink's pool)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySink:
    """Writes ``<dir>/<bundle id>.json`` atomically (see the module text)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._pool = concurrent.futures.ThreadPoolExecutor(
            WRITE_THREADS, thread_name_prefix="receiver-write"
        )

    def _write_all(self, items: Sequence[Item]) -> None:
        pid = os.getpid()
        moves = [
            (self.directory / f".{bundle_id}.{pid}.tmp", self.directory / f"{bundle_id}.json")
            for bundle_id, _ in items
        ]
        # creating, writing and fsyncing the files side by side: each thread waits in its own
        # system calls, and the filesystem commits the fsyncs together
        list(self._pool.map(_write_durably, [tmp for tmp, _ in moves], [p for _, p in items]))
        for tmp, final in moves:
            os.replace(tmp, final)
        _fsync(self.directory)

    async def deliver_many(self, items: Sequence[Item]) -> dict[str, str]:
        if not items:
            return {}
        try:
            await asyncio.to_thread(self._write_all, items)
        except OSError as exc:  # disk full, permissions: retried, the messages stay unacked
            raise TransientDeliveryError(
                ErrorClass.SERVER, f"cannot write to {self.directory}: {exc}"
            ) from exc
        return {}


class FhirSink:
    """POSTs accepted Bundles to a FHIR server (use inside the client's ``async with``)."""

    def __init__(self, client: FhirClient) -> None:
        self.client = client

    async def deliver_many(self, items: Sequence[Item]) -> dict[str, str]:
        refused = {}
        for bundle_id, payload in items:
            try:
                await self.client.post_bundle(payload, bundle_id)
            except PermanentDeliveryError as exc:
                refused[bundle_id] = str(exc)
        return refused


class SeenBundles:
    """Bundle ids already accepted, in SQLite; all calls run in one private thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="receiver-seen"
        )
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS seen (bundle_id TEXT PRIMARY KEY, topic TEXT NOT NULL, "
            "kid TEXT NOT NULL, received TEXT NOT NULL) STRICT"
        )
        self._conn = conn

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._call(self._open)

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    def _among(self, bundle_ids: Sequence[str]) -> set[str]:
        assert self._conn is not None
        marks = ",".join("?" * len(bundle_ids))
        rows = self._conn.execute(
            f"SELECT bundle_id FROM seen WHERE bundle_id IN ({marks})",  # noqa: S608 - marks only
            list(bundle_ids),
        )
        return {row[0] for row in rows}

    def _add_all(self, rows: Sequence[tuple[str, str, str]]) -> None:
        assert self._conn is not None
        now = datetime.now(UTC).isoformat()
        with self._conn:  # one transaction: one commit for the batch
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)",
                [(bundle_id, topic, kid, now) for bundle_id, topic, kid in rows],
            )

    async def seen_among(self, bundle_ids: Sequence[str]) -> set[str]:
        """Which of ``bundle_ids`` were accepted before."""
        return await self._call(self._among, bundle_ids) if bundle_ids else set()

    async def add_all(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Remember (bundle id, topic, kid) of accepted Bundles, in one transaction."""
        if rows:
            await self._call(self._add_all, rows)

    async def contains(self, bundle_id: str) -> bool:
        return bundle_id in await self.seen_among([bundle_id])

    def count(self) -> int:
        """Number of ids remembered (blocking; for tests and summaries)."""
        conn = sqlite3.connect(self.path)
        try:
            return int(conn.execute("SELECT count(*) FROM seen").fetchone()[0])
        finally:
            conn.close()
