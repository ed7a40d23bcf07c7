"""The retrieval index: its own SQLite file in the data directory (WAL), with sqlite-vec.

Tables: ``documents`` (path, content sha256, title, kind, mtime, chunker signature), ``chunks``
(document, ordinal, text, page, heading path, the float32 unit vector) and ``chunk_bits``, a
sqlite-vec ``vec0`` table of the same vectors binary-quantized (one bit per dimension, its sign).
``meta`` records the embedding model and dimension: vectors of different models never mix.

Search is two-stage: a KNN over the bit vectors (Hamming distance, a brute-force scan of 48 bytes
per chunk for 384 dimensions) picks ``candidates`` chunks, then their float vectors are reranked
by exact cosine similarity. sqlite-vec 0.1.9's KNN costs about O(rows × k), so the candidate count
is what the latency budget buys; ``bench/rag.py`` measures latency and recall against exact
search. A document's chunks are replaced in one transaction.

One :class:`Index` is one connection, used from one thread. This Python's ``sqlite3`` cannot load
extensions; ``sqlean`` (a drop-in build that can) is used whenever the standard module cannot.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray

from gateway.rag.chunking import Chunk
from gateway.rag.errors import IndexMismatchError, IndexStorageError

INDEX_FILENAME: Final = "rag.sqlite3"
BUSY_TIMEOUT_MS: Final = 10_000  # an ingest in another process holding the write lock
CACHE_KIB: Final = 65_536  # page cache: the bit vectors of 100k chunks (5 MB) and more stay hot
MAX_KNN_K: Final = 4096  # sqlite-vec rejects larger k in a KNN query
_META_MODEL: Final = "model"
_META_DIMENSION: Final = "dimension"


def index_path(data_dir: Path) -> Path:
    """Where the retrieval index lives in a data directory."""
    return data_dir / INDEX_FILENAME


def _driver() -> ModuleType:
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    import sqlean

    return cast(ModuleType, sqlean)


_DB = _driver()
DatabaseError: Final = cast(type[Exception], _DB.Error)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` with sqlite-vec loaded (through sqlean where needed)."""
    import sqlite_vec

    conn = cast(sqlite3.Connection, _DB.connect(str(path), isolation_level=None))
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    except BaseException:
        conn.close()
        raise
    return conn


# -- schema ----------------------------------------------------------------------------------------

_V1 = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT""",
    """CREATE TABLE documents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        title TEXT NOT NULL,
        kind TEXT NOT NULL,
        mtime REAL NOT NULL,
        size INTEGER NOT NULL,
        chunker TEXT NOT NULL,
        ingested TEXT NOT NULL
    ) STRICT""",
    # AUTOINCREMENT: a chunk id is never reused, so a passage cited earlier cannot come to name
    # other text after its document was re-ingested.
    """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        page INTEGER,
        section TEXT NOT NULL,
        embedding BLOB NOT NULL,
        UNIQUE (document_id, ordinal)
    ) STRICT""",
)
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1,)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise IndexStorageError(
            path,
            f"index schema version {version} is newer than this gateway knows "
            f"(up to {len(MIGRATIONS)}); upgrade the gateway or use another --data-dir",
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) < number:
                for statement in MIGRATIONS[number - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexModel:
    """The embedding model an index was built with."""

    name: str
    dimension: int


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    id: int
    path: str
    sha256: str
    title: str
    kind: str
    mtime: float
    size: int
    chunker: str


@dataclass(frozen=True, slots=True)
class NewDocument:
    """What :meth:`Index.replace_document` stores for a file."""

    path: str
    sha256: str
    title: str
    kind: str
    mtime: float
    size: int
    chunker: str


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: int
    document_path: str
    document_title: str
    ordinal: int
    text: str
    page: int | None
    headings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replaced:
    """Outcome of :meth:`Index.replace_document`."""

    created: bool  # the path was not indexed before
    chunks_added: int
    chunks_removed: int


class Index:
    """A connection to one index file (one thread); create with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Index:
        """Open (creating when missing) and migrate the index at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexStorageError(path, f"cannot create its directory ({exc})") from exc
        with _storage_errors(path):
            conn = connect(path)
            try:
                _migrate(conn, path)
            except BaseException:
                conn.close()
                raise
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- model -------------------------------------------------------------------------------------

    def model(self) -> IndexModel | None:
        """The model the vectors were made with; None before the first document."""
        with _storage_errors(self.path):
            rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if _META_MODEL not in rows:
            return None
        return IndexModel(str(rows[_META_MODEL]), int(rows[_META_DIMENSION]))

    def check_model(self, name: str) -> None:
        """Raise :class:`IndexMismatchError` when the index holds another model's vectors."""
        current = self.model()
        if current is not None and current.name != name:
            raise IndexMismatchError(self.path, current.name, name)

    def bind_model(self, name: str, dimension: int) -> None:
        """Record the model (the first time: also create the bit-vector table)."""
        current = self.model()
        if current is not None:
            if current != IndexModel(name, dimension):
                raise IndexMismatchError(self.path, current.name, name)
            return
        with self._transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?), (?, ?)",
                (_META_MODEL, name, _META_DIMENSION, str(dimension)),
            )
            self._conn.execute(
                f"CREATE VIRTUAL TABLE chunk_bits USING vec0(embedding bit[{int(dimension)}])"
            )

    # -- documents ---------------------------------------------------------------------------------

    def document(self, path: str) -> DocumentRecord | None:
        with _storage_errors(self.path):
            row = self._conn.execute(
                "SELECT id, path, sha256, title, kind, mtime, size, chunker FROM documents "
                "WHERE path = ?",
                (path,),
            ).fetchone()
        return DocumentRecord(*row) if row is not None else None

    def documents(self) -> list[DocumentRecord]:
        with _storage_errors(self.path):
            rows = self._conn.execute(
                "SELECT id, path, sha256, title, kind, mtime, size, chunker FROM documents "
                "ORDER BY path"
            ).fetchall()
        return [DocumentRecord(*row) for row in rows]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        with _storage_errors(self.path):
            documents = self._conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            chunks = self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(documents), int(chunks)

    def replace_document(
        self, document: NewDocument, chunks: Sequence[Chunk], vectors: NDArray[np.float32]
    ) -> Replaced:
        """Store ``document`` with ``chunks`` (row i of ``vectors`` is chunk i), replacing what
        was indexed for its path, all in one transaction."""
        model = self.model()
        if model is None:
            raise IndexStorageError(self.path, "bind_model() must run before the first document")
        if vectors.shape != (len(chunks), model.dimension):
            raise ValueError(
                f"{len(chunks)} chunks need {len(chunks)}×{model.dimension} vectors, "
                f"got {'×'.join(map(str, vectors.shape))}"
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ingested = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction():
            row = self._conn.execute(
                "SELECT id FROM documents WHERE path = ?", (document.path,)
            ).fetchone()
            removed = 0
            if row is not None:
                document_id = int(row[0])
                removed = self._delete_chunks(document_id)
                self._conn.execute(
                    "UPDATE documents SET sha256 = ?, title = ?, kind = ?, mtime = ?, size = ?, "
                    "chunker = ?, ingested = ? WHERE id = ?",
                    (
                        document.sha256, document.title, document.kind, document.mtime,
                        document.size, document.chunker, ingested, document_id,
                    ),
                )  # fmt: skip
            else:
                cursor = self._conn.execute(
                    "INSERT INTO documents (path, sha256, title, kind, mtime, size, chunker, "
                    "ingested) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        document.path, document.sha256, document.title, document.kind,
                        document.mtime, document.size, document.chunker, ingested,
                    ),
                )  # fmt: skip
                document_id = int(cast(int, cursor.lastrowid))
            for chunk, vector in zip(chunks, vectors, strict=True):
                blob = vector.tobytes()
                cursor = self._conn.execute(
                    "INSERT INTO chunks (document_id, ordinal, text, page, section, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        document_id, chunk.ordinal, chunk.text, chunk.page,
                        json.dumps(list(chunk.headings), ensure_ascii=False), blob,
                    ),
                )  # fmt: skip
                self._conn.execute(
                    "INSERT INTO chunk_bits (rowid, embedding) VALUES (?, vec_quantize_binary(?))",
                    (cursor.lastrowid, blob),
                )
        return Replaced(row is None, len(chunks), removed)

    def remove_document(self, path: str) -> int:
        """Drop a document and its chunks; returns the number of chunks removed."""
        with self._transaction():
            row = self._conn.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row is None:
                return 0
            removed = self._delete_chunks(int(row[0]))
            self._conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
        return removed

    def _delete_chunks(self, document_id: int) -> int:
        # vec0 is a virtual table: no foreign key reaches it, so its rows go by hand, one rowid
        # at a time (a rowid equality is a point lookup in vec0, an IN list is a scan).
        ids = self._conn.execute(
            "SELECT id FROM chunks WHERE document_id = ?", (document_id,)
        ).fetchall()
        self._conn.executemany("DELETE FROM chunk_bits WHERE rowid = ?", ids)
        cursor = self._conn.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        return int(cursor.rowcount)

    # -- search ------------------------------------------------------------------------------------

    def nearest(
        self, query: NDArray[np.float32], k: int, candidates: int
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(chunk id, cosine similarity)``, best first: a Hamming KNN over the bit
        vectors picks ``candidates`` chunks, exact cosine over their float vectors ranks them."""
        if k < 1:
            return []
        query = np.ascontiguousarray(query, dtype=np.float32)
        coarse = min(max(candidates, k), MAX_KNN_K)
        with _storage_errors(self.path):
            rows = self._conn.execute(
                "WITH coarse AS (SELECT rowid AS id FROM chunk_bits "
                "WHERE embedding MATCH vec_quantize_binary(?) AND k = ?) "
                "SELECT chunks.id, chunks.embedding FROM coarse "
                "JOIN chunks ON chunks.id = coarse.id",
                (query.tobytes(), coarse),
            ).fetchall()
        if not rows:
            return []
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        scores = matrix.reshape(len(rows), query.shape[0]) @ query
        order = np.lexsort((ids, -scores))[:k]  # best score first, ties by id
        return [(int(ids[i]), float(scores[i])) for i in order]

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """The chunks with these ids (with their document), by id."""
        if not ids:
            return {}
        with _storage_errors(self.path):
            rows = self._conn.execute(
                "SELECT chunks.id, documents.path, documents.title, chunks.ordinal, chunks.text, "
                "chunks.page, chunks.section FROM chunks "
                "JOIN documents ON documents.id = chunks.document_id "
                "WHERE chunks.id IN (SELECT value FROM json_each(?))",
                (json.dumps([int(i) for i in ids]),),
            ).fetchall()
        return {
            int(row[0]): StoredChunk(
                int(row[0]), row[1], row[2], int(row[3]), row[4], row[5], tuple(json.loads(row[6]))
            )
            for row in rows
        }

    # -- transactions ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with _storage_errors(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


@contextlib.contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """SQLite failures (corrupt file, disk full, lock timeout) as :class:`IndexStorageError`."""
    try:
        yield
    except DatabaseError as exc:
        raise IndexStorageError(
            path, f"index database error: {' '.join(str(exc).split())}"
        ) from exc
