"""Compact storage: waveform samples as binary, JSON compressed with trained dictionaries.

A waveform Observation (PhdRtsaObservation) carries its samples as ``valueSampledData.data``:
FHIR's space-separated decimal text, about four bytes per ECG sample. The store keeps the
resource without that string and the samples apart, as binary: the first sample and the
differences between neighbours (small for a physiological signal) as little-endian signed
integers of the narrowest width that holds them, compressed with Zstandard. :func:`unpack`
rebuilds the same ``data`` string, so the resource read back is the one stored, byte for byte
in its JSON.

Only data in the canonical form the mapping writes (integers, single spaces) is packed; any other
data stays in the text as it came.

The rest of an Observation's JSON, and the signed Bundles in the outbox, are many small texts
that repeat the same names, codes and references: each is compressed on its own (any row reads
back alone) with a Zstandard dictionary trained on the store's own rows (:class:`TextCodec`).
The functions here are pure; the codec classes read and write their dictionaries through the
caller's connection.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import sys
from array import array
from collections.abc import Mapping
from typing import Any, Final

import zstandard

from gateway.fhir import jsonio

LEVEL: Final = 3
TRAIN_ROWS: Final = 256  # Observations stored plain before the first dictionary is trained
DICTIONARY_BYTES: Final = 16 * 1024
WIDTHS: Final = {1: "b", 2: "h", 4: "i", 8: "q"}  # array type codes: 1, 2, 4, 8-byte ints
CANONICAL: Final = re.compile(r"-?\d+(?: -?\d+)*")
_compressor = zstandard.ZstdCompressor(level=LEVEL)
_decompressor = zstandard.ZstdDecompressor()


class CompactError(ValueError):
    """Stored samples that cannot be read back (a corrupted row)."""


def _width(deltas: list[int]) -> int:
    low, high = (min(deltas), max(deltas)) if deltas else (0, 0)
    for width in WIDTHS:
        bits = 8 * width - 1
        if -(1 << bits) <= low and high < (1 << bits):
            return width
    raise OverflowError("a sample difference does not fit in 64 bits")


def _little_endian(values: array[int]) -> array[int]:
    if sys.byteorder == "big":
        values.byteswap()
    return values


def encode_samples(data: str) -> bytes | None:
    """The packed form of a SampledData ``data`` string; None when it is not canonical."""
    if CANONICAL.fullmatch(data) is None:
        return None
    values = [int(v) for v in data.split(" ")]
    if " ".join(map(str, values)) != data:  # leading zeros, "-0"
        return None
    deltas = [values[0], *(b - a for a, b in itertools.pairwise(values))]
    try:
        width = _width(deltas)
    except OverflowError:
        return None
    raw = _little_endian(array(WIDTHS[width], deltas)).tobytes()
    return bytes([width]) + _compressor.compress(raw)


def decode_samples(packed: bytes) -> str:
    """The ``data`` string :func:`encode_samples` packed."""
    if not packed or packed[0] not in WIDTHS:
        raise CompactError("stored samples with an unknown layout")
    try:
        raw = _decompressor.decompress(packed[1:])
    except zstandard.ZstdError as exc:
        raise CompactError(f"stored samples do not decompress: {exc}") from exc
    deltas = array(WIDTHS[packed[0]])
    deltas.frombytes(raw)
    return " ".join(map(str, itertools.accumulate(_little_endian(deltas))))


def pack(resource: Mapping[str, Any]) -> tuple[str, bytes | None]:
    """The resource's JSON text (without its samples when they are packed) and the samples."""
    sampled = resource.get("valueSampledData")
    data = sampled.get("data") if isinstance(sampled, Mapping) else None
    packed = encode_samples(data) if isinstance(data, str) else None
    if packed is None:
        return jsonio.dumps(dict(resource)), None
    assert isinstance(sampled, Mapping)
    rest = dict(resource)
    rest["valueSampledData"] = {k: v for k, v in sampled.items() if k != "data"}
    return jsonio.dumps(rest), packed


def unpack(text: str, samples: bytes | None) -> dict[str, Any]:
    """The resource :func:`pack` stored."""
    resource: dict[str, Any] = jsonio.loads(text)
    if samples is not None:
        sampled = dict(resource["valueSampledData"])
        sampled["data"] = decode_samples(samples)
        resource["valueSampledData"] = sampled
    return resource


class TextCodec:
    """Texts of one ``purpose`` (a table's rows) kept compressed with a Zstandard dictionary
    trained on that table's own rows once it holds :data:`TRAIN_ROWS` of them (table
    ``dictionaries``; a dictionary is never changed or removed, so every row stays readable).
    A row is either ``text`` (plain) or ``''`` with ``body`` = the compressed text and
    ``dictionary`` = its dictionary's id. ``latest`` selects the newest plain texts of the
    table, newest first (parameter: how many); ``rows`` is a cheap upper bound of how many rows
    the table ever had (its largest rowid), so that no write before training reads them all."""

    def __init__(self, purpose: str, latest: str, rows: str) -> None:
        self._purpose = purpose
        self._latest_sql = latest
        self._rows_sql = rows
        self._compressors: dict[int, zstandard.ZstdCompressor] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._latest: int | None = None
        self._writes_before_training = 0  # after too little to learn from: wait this many writes

    def _load(self, conn: sqlite3.Connection, dictionary: int) -> None:
        row = conn.execute("SELECT data FROM dictionaries WHERE id = ?", (dictionary,)).fetchone()
        if row is None:
            raise CompactError(f"a stored row refers to dictionary {dictionary}, which is gone")
        data = zstandard.ZstdCompressionDict(bytes(row[0]))
        self._compressors[dictionary] = zstandard.ZstdCompressor(level=LEVEL, dict_data=data)
        self._decompressors[dictionary] = zstandard.ZstdDecompressor(dict_data=data)

    def prepare(self, conn: sqlite3.Connection, now: str) -> None:
        """Before a write: know the newest dictionary, or train the first one when the table
        holds enough plain rows (inside the caller's transaction)."""
        if self._latest is not None:
            return
        if self._writes_before_training > 0:
            self._writes_before_training -= 1
            return
        row = conn.execute(
            "SELECT max(id) FROM dictionaries WHERE purpose = ?", (self._purpose,)
        ).fetchone()
        if row[0] is not None:
            self._latest = int(row[0])
            self._load(conn, self._latest)
            return
        (rows,) = conn.execute(self._rows_sql).fetchone()
        if (rows or 0) < TRAIN_ROWS:
            return
        texts: list[bytes | bytearray | memoryview] = [
            str(text).encode() for (text,) in conn.execute(self._latest_sql, (TRAIN_ROWS,))
        ]
        if len(texts) < TRAIN_ROWS:
            return
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, texts)
        except zstandard.ZstdError:  # too little variety to learn from: stay plain a while
            self._writes_before_training = TRAIN_ROWS
            return
        cursor = conn.execute(
            "INSERT INTO dictionaries (data, created, purpose) VALUES (?, ?, ?)",
            (trained.as_bytes(), now, self._purpose),
        )
        self._latest = int(cursor.lastrowid or 0)
        self._load(conn, self._latest)

    def compress(self, text: str) -> tuple[str, bytes | None, int | None]:
        """(text, body, dictionary) column values for ``text``."""
        if self._latest is None:
            return text, None, None
        return "", self._compressors[self._latest].compress(text.encode()), self._latest

    def decompress(
        self, conn: sqlite3.Connection, text: str, body: bytes | None, dictionary: int | None
    ) -> str:
        """The text :meth:`compress` stored as these column values."""
        if body is None:
            return text
        if dictionary is None:
            raise CompactError("a compressed row without its dictionary")
        if dictionary not in self._decompressors:
            self._load(conn, dictionary)
        try:
            return self._decompressors[dictionary].decompress(bytes(body)).decode()
        except zstandard.ZstdError as exc:
            raise CompactError(f"a stored row does not decompress: {exc}") from exc


class ResourceCodec:
    """How one connection stores Observations (see the module text): samples apart, and the JSON
    through a :class:`TextCodec` (columns ``resource``, ``body``, ``dictionary``)."""

    def __init__(self) -> None:
        self._text = TextCodec(
            "observations",
            "SELECT resource FROM observations WHERE body IS NULL ORDER BY row DESC LIMIT ?",
            "SELECT max(row) FROM observations",
        )

    def prepare(self, conn: sqlite3.Connection, now: str) -> None:
        self._text.prepare(conn, now)

    def pack(
        self, resource: Mapping[str, Any]
    ) -> tuple[str, bytes | None, int | None, bytes | None]:
        """(resource, body, dictionary, samples) column values for ``resource``."""
        text, samples = pack(resource)
        return *self._text.compress(text), samples

    def unpack(self, conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
        """The resource of a row with ``resource``, ``body``, ``dictionary``, ``samples``."""
        text = self._text.decompress(conn, row["resource"], row["body"], row["dictionary"])
        return unpack(text, row["samples"])


def bundle_codec() -> TextCodec:
    """How one connection stores the outbox's signed Bundles (``payload``, ``body``,
    ``dictionary``): a Bundle signed for one Observation shrinks from ~1.9 kB to ~170 bytes."""
    return TextCodec(
        "bundles",
        # one uplink's items: each Bundle once (every uplink has its own copy)
        """SELECT payload FROM outbox
           WHERE uplink = (SELECT uplink FROM outbox ORDER BY seq DESC LIMIT 1)
             AND body IS NULL AND payload != '' ORDER BY seq DESC LIMIT ?""",
        "SELECT max(seq) FROM outbox",
    )
