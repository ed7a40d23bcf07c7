"""Observations stored compactly (gateway/store/compact.py, schema version 5): any integer
samples round-trip exactly, non-canonical data stays text, a mapped ECG Observation is read back
as the same JSON, held readings keep their samples when a patient claims them, the version 4 →
5 migration packs existing rows; once trained, a dictionary compresses the JSON and every row
(also through another connection) reads back the same; the outbox's signed Bundles (version 6)
likewise, sent exactly as signed; a corrupted row is an error, not wrong data."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.fhir import jsonio
from gateway.forward.signing import verify_bundle
from gateway.ieee11073.measurement import Measurement, SampleArray
from gateway.ieee11073.numbers import Float
from gateway.store import ObservationRecord, Store
from gateway.store.compact import (
    TRAIN_ROWS,
    CompactError,
    decode_samples,
    encode_samples,
    pack,
    unpack,
)
from gateway.store.schema import MIGRATIONS, migrate
from gateway.store.store import connect
from tests.fixtures_mqtt import DEVICE, make_signer, record, transaction_bundle
from tests.test_fhir_observation import one
from tests.test_store import KEY

INT64 = st.integers(min_value=-(2**62), max_value=2**62)


def ecg_strip(samples: tuple[int, ...]) -> dict[str, Any]:
    """A GHS ECG lead II segment mapped by the gateway (PhdRtsaObservation)."""
    array = SampleArray(
        scale_factor=Float.from_decimal("0.005"),
        offset=Float.from_decimal("-3.40"),
        period_s=Float.from_decimal("1"),
        samples_per_period=250,
        bytes_per_sample=2,
        samples=samples,
    )
    return one(Measurement(131330, unit_code=4274, samples=array))


def signal(count: int, seed: int = 7) -> tuple[int, ...]:
    """An ECG-like 12-bit signal: a slow wave, a spike every 200 samples, noise."""
    noise = random.Random(seed)
    return tuple(
        2048 + (600 if i % 200 == 20 else 0) + (i % 50) * 3 + noise.randint(-4, 4)
        for i in range(count)
    )


@given(st.lists(INT64, min_size=1, max_size=400))
@example([-(2**62), 2**62])  # a difference of 2**63: one past a signed 64-bit integer
def test_any_integer_samples_round_trip(values: list[int]) -> None:
    """Packed whenever every difference fits in 64 bits (then read back the same), else kept
    as text; either way the resource reads back the same."""
    data = " ".join(map(str, values))
    deltas = [values[0], *(b - a for a, b in itertools.pairwise(values))]
    packed = encode_samples(data)
    if all(-(2**63) <= d < 2**63 for d in deltas):
        assert packed is not None
        assert decode_samples(packed) == data
    else:
        assert packed is None
    resource = {"resourceType": "Observation", "valueSampledData": {"data": data}}
    assert unpack(*pack(resource)) == resource


@pytest.mark.parametrize("data", ["", "01 2", "1  2", "-0", "1.5 2", " 1", "1 ", "1e3", "+1"])
def test_data_not_in_canonical_form_stays_text(data: str) -> None:
    assert encode_samples(data) is None
    resource = {"resourceType": "Observation", "valueSampledData": {"data": data}}
    text, samples = pack(resource)
    assert samples is None
    assert unpack(text, samples) == resource


def test_a_mapped_ecg_strip_is_read_back_as_the_same_json() -> None:
    strip = ecg_strip(signal(250))
    text, samples = pack(strip)
    assert samples is not None
    assert '"data"' not in text
    assert jsonio.dumps(unpack(text, samples)) == jsonio.dumps(strip)
    stored = len(text) + len(samples)
    assert stored < len(jsonio.dumps(strip)) * 0.6  # 250 samples: ~1 KB of text to ~150 bytes


def test_observations_without_samples_are_stored_as_they_are() -> None:
    resource = {"resourceType": "Observation", "valueQuantity": {"value": Decimal(72)}}
    assert pack(resource) == (jsonio.dumps(resource), None)


def test_a_corrupted_row_is_an_error() -> None:
    packed = encode_samples("1 2 3")
    assert packed is not None
    with pytest.raises(CompactError, match="unknown layout"):
        decode_samples(b"\x03" + packed[1:])
    with pytest.raises(CompactError, match="do not decompress"):
        decode_samples(packed[:1] + b"not zstd")


def _record(identifier: str, strip: dict[str, Any]) -> ObservationRecord:
    when = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
    resource = strip | {"identifier": [{"value": identifier}]}
    return ObservationRecord(identifier, "131330", DEVICE, when, resource)


def test_the_store_keeps_samples_packed_and_gives_back_the_resource(tmp_path: Path) -> None:
    strip = _record("ecg-1", ecg_strip(signal(250))).resource
    with Store(tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",)) as store:
        store.add_observations(DEVICE, [_record("ecg-1", strip)], transaction_bundle)
        row = store.conn.execute("SELECT resource, samples FROM observations").fetchone()
        assert row["samples"] is not None
        assert '"data"' not in row["resource"]
        (read,) = store.latest_observations(1)
        assert jsonio.dumps(read.resource) == jsonio.dumps(strip)
        (item,) = store.pending_items("mqtt", limit=1)  # the signed Bundle carries the text
        assert strip["valueSampledData"]["data"] in item.payload


def test_held_readings_keep_their_samples_when_claimed(tmp_path: Path) -> None:
    strip = ecg_strip(signal(250, seed=3))
    with Store(tmp_path / "g.sqlite3", signer=make_signer(KEY), uplinks=("mqtt",)) as store:
        store.add_observations(DEVICE, [_record("ecg-2", strip)], transaction_bundle, hold=True)
        released = store.release_held(
            "Patient/7", after=None, before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        )
        assert released.readings == 1
        (read,) = store.latest_observations(1)
        assert read.resource["subject"] == {"reference": "Patient/7"}
        assert read.resource["valueSampledData"] == strip["valueSampledData"]


def test_the_migration_packs_the_samples_of_existing_rows(tmp_path: Path) -> None:
    path = tmp_path / "v4.sqlite3"
    conn = connect(path)
    assert migrate(conn, path, MIGRATIONS[:4]) == 4
    strips = {f"ecg-{n}": ecg_strip(signal(250, seed=n)) for n in range(3)}
    rows = [(k, jsonio.dumps(v)) for k, v in strips.items()]
    rows.append(("hr-1", jsonio.dumps({"resourceType": "Observation", "id": "hr"})))
    for identifier, text in rows:
        conn.execute(
            "INSERT INTO observations (identifier, code, device_address, effective, received, "
            "resource) VALUES (?, '131330', ?, NULL, '2024-01-01T00:00:00.000000+00:00', ?)",
            (identifier, DEVICE, text),
        )
    conn.close()
    with Store(path) as upgraded:
        packed = upgraded.conn.execute(
            "SELECT count(*) FROM observations WHERE samples IS NOT NULL"
        ).fetchone()[0]
        assert packed == 3
        read = {o.identifier: o.resource for o in upgraded.latest_observations(10)}
        assert {k: jsonio.dumps(read[k]) for k in strips} == {
            k: jsonio.dumps(v) for k, v in strips.items()
        }
        assert read["hr-1"] == {"resourceType": "Observation", "id": "hr"}


def _readings(count: int) -> list[ObservationRecord]:
    """Heart rates and ECG strips, as a sensor session stores them."""
    records = []
    for n in range(count):
        if n % 3 == 0:
            records.append(_record(f"ecg-{n}", ecg_strip(signal(250, seed=n))))
        else:
            records.append(record(f"hr-{n}", f"{60 + n % 40}.0"))
    return records


def test_once_trained_a_dictionary_compresses_the_json_and_every_row_reads_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    readings = _readings(TRAIN_ROWS + 120)
    with Store(path, signer=make_signer(KEY), uplinks=("mqtt",)) as store:
        for reading in readings:
            store.add_observations(DEVICE, [reading], transaction_bundle)
        purposes = store.conn.execute("SELECT purpose FROM dictionaries ORDER BY id").fetchall()
        assert sorted(purpose for (purpose,) in purposes) == ["bundles", "observations"]
        rows = store.conn.execute(
            "SELECT identifier, resource, body, samples FROM observations ORDER BY row"
        ).fetchall()
    plain = [r for r in rows if r["body"] is None]
    packed = [r for r in rows if r["body"] is not None]
    assert len(plain) == TRAIN_ROWS  # the first rows stay as they were; the rest are packed
    assert all(r["resource"] == "" for r in packed)
    expected = {r.identifier: jsonio.dumps(r.resource) for r in readings}
    stored = sum(len(r["body"]) + len(r["samples"] or b"") for r in packed)
    text = sum(len(expected[r["identifier"]]) for r in packed)
    assert stored < text / 4  # measured here: about 1/7 (the noisy ECG samples dominate)
    with Store(path) as reader:  # another connection loads the dictionary when it meets it
        read = {o.identifier: jsonio.dumps(o.resource) for o in reader.latest_observations(1000)}
    assert read == expected


def test_the_outbox_keeps_signed_bundles_compressed_and_sends_them_as_signed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    readings = _readings(TRAIN_ROWS + 60)
    with Store(path, signer=make_signer(KEY), uplinks=("mqtt", "https")) as store:
        for reading in readings:
            store.add_observations(DEVICE, [reading], transaction_bundle)
        rows = store.conn.execute(
            "SELECT uplink, payload, body, dictionary, size FROM outbox ORDER BY seq"
        ).fetchall()
        items = store.pending_items("mqtt", limit=10_000)
    plain = [r for r in rows if r["body"] is None]
    packed = [r for r in rows if r["body"] is not None]
    assert len(plain) == 2 * TRAIN_ROWS  # one per uplink until a dictionary could be trained
    assert len(packed) == 2 * 60
    assert all(r["payload"] == "" for r in packed)
    assert sum(len(r["body"]) for r in packed) < sum(r["size"] for r in packed) / 5
    # what is sent is the signed Bundle as it was signed, for every item, old or packed
    assert len(items) == len(readings)
    for item, reading in zip(items, readings, strict=True):
        bundle = jsonio.loads(item.payload)
        assert jsonio.dumps(bundle) == item.payload
        assert bundle["entry"][0]["resource"] == jsonio.loads(jsonio.dumps(reading.resource))
        assert verify_bundle(bundle, {KEY.kid: KEY.public_key}) == KEY.kid
    with Store(path) as reader:  # another connection loads the dictionary when it meets it
        assert [i.payload for i in reader.pending_items("https", limit=10_000)] == [
            i.payload for i in items
        ]


def test_a_corrupted_compressed_row_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    with Store(path, signer=make_signer(KEY), uplinks=("mqtt",)) as store:
        for reading in _readings(TRAIN_ROWS + 1):
            store.add_observations(DEVICE, [reading], transaction_bundle)
        store.conn.execute(
            "UPDATE observations SET body = x'00010203' WHERE row = (SELECT max(row) FROM "
            "observations)"
        )
        with pytest.raises(CompactError, match="does not decompress"):
            store.latest_observations(1)
