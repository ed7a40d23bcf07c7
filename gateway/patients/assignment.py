"""The runtime patient assignment: one small JSON file in the data directory (mode 0600).

``bedside patient set|clear`` and ``PUT|DELETE /api/patient`` write it (atomically: a new file
renamed over the old one); the running gateway re-reads it whenever its identity changes (inode,
size, change time), which it checks for every reading, so a reading received after the file was
replaced is never labelled with the previous patient. docs/contracts.md, "Patient", has the rules:

- A runtime assignment wins over the configured ``[patient]``; ``clear`` returns to the
  configured one (or to none).
- With no patient, readings are stored but held back from the uplinks. ``set`` alone never
  releases them; ``set --claim-held`` (``"claim_held": true``) gives them to the patient being set,
  but only those received since the previous patient was cleared (:class:`Claim`): readings held
  before an earlier assignment stay held, so nothing is attributed across a patient change.
- A file that cannot be read means "no patient" (hold), never the configured patient: a broken
  assignment must not send readings under a name that may be wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import BedsideError
from gateway.fhir.observation import PatientRef
from gateway.paths import write_private_file

log = logging.getLogger(__name__)

PATIENT_FILE: Final = "patient.json"
_ID: Final = r"[A-Za-z0-9\-.]{1,64}"  # FHIR R4 datatypes, "id"
_REFERENCE: Final = re.compile(
    rf"(?:https?://[^\s|]+/)?Patient/{_ID}(?:/_history/{_ID})?"
    r"|urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_URI: Final = re.compile(r"\S+")


class PatientError(BedsideError):
    """A patient reference, identifier or assignment file that is not usable (one sentence)."""


def validate_reference(text: str) -> str:
    """``Patient/123``, an absolute URL ending in ``Patient/123`` or a ``urn:uuid:``."""
    if _REFERENCE.fullmatch(text) is None:
        raise PatientError(
            f"patient reference {text!r}: expected Patient/<id> (id: up to 64 of A-Z a-z 0-9 - .),"
            " an absolute URL ending in Patient/<id>, or urn:uuid:<uuid>"
        )
    return text


def parse_identifier(text: str) -> tuple[str, str]:
    """``SYSTEM|VALUE`` (the FHIR token form) → (system, value)."""
    system, bar, value = text.partition("|")
    if not bar or not system or not value or _URI.fullmatch(system) is None or "|" in value:
        raise PatientError(
            f"patient identifier {text!r}: expected SYSTEM|VALUE, e.g. "
            "urn:oid:2.16.840.1.113883.2.4.6.3|123456782"
        )
    return system, value


def patient_ref(reference: str, identifier: tuple[str, str] | None = None) -> PatientRef:
    """A checked :class:`PatientRef`."""
    validate_reference(reference)
    if identifier is None:
        return PatientRef(reference)
    system, value = identifier
    if not system or not value or _URI.fullmatch(system) is None:
        raise PatientError("patient identifier: give a system (a URI) and a value, both non-empty")
    return PatientRef(reference, system, value)


def patient_json(patient: PatientRef | None) -> dict[str, Any] | None:
    if patient is None:
        return None
    out: dict[str, Any] = {"reference": patient.reference}
    if patient.identifier_system is not None:
        out["identifier"] = {
            "system": patient.identifier_system,
            "value": patient.identifier_value,
        }
    return out


def _time(text: object) -> dt.datetime | None:
    if text is None:
        return None
    moment = dt.datetime.fromisoformat(str(text))
    if moment.utcoffset() is None:
        raise ValueError(f"{text}: no time zone")
    return moment


def _text(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Claim:
    """Held readings received in ``(after, before]`` go to the patient set with the claim."""

    after: dt.datetime | None
    before: dt.datetime


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """What the file says: the patient (None: cleared), since when, and a pending claim."""

    patient: PatientRef | None
    changed_at: dt.datetime
    claim: Claim | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "patient": patient_json(self.patient),
            "changed_at": _text(self.changed_at),
            "claim": (
                None
                if self.claim is None
                else {"after": _text(self.claim.after), "before": _text(self.claim.before)}
            ),
        }

    @classmethod
    def from_json(cls, data: Any) -> RuntimeState:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        raw = data.get("patient")
        patient = None
        if raw is not None:
            ident = raw.get("identifier")
            patient = patient_ref(
                str(raw["reference"]),
                None if ident is None else (str(ident["system"]), str(ident["value"])),
            )
        changed = _time(data["changed_at"])
        if changed is None:
            raise ValueError("changed_at is missing")
        claim_data = data.get("claim")
        claim = None
        if claim_data is not None:
            before = _time(claim_data["before"])
            if before is None:
                raise ValueError("claim.before is missing")
            claim = Claim(_time(claim_data.get("after")), before)
        return cls(patient, changed, claim)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PatientAssignment:
    """The runtime assignment in ``data_dir`` over the ``configured`` patient.

    Blocking file I/O, all of it small: a ``stat`` per :meth:`current` call, a read of a few
    hundred bytes when the file changed, an atomic replace per change.
    """

    def __init__(
        self,
        data_dir: Path,
        configured: PatientRef | None = None,
        *,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.path = data_dir / PATIENT_FILE
        self.configured = configured
        self._clock = clock
        self._seen: tuple[int, int, int, int] | None = None
        self._state: RuntimeState | None = None
        self._broken: str | None = None
        # runtime() runs on the loop (every reading) and in the thread that writes a change
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    def runtime(self) -> RuntimeState | None:
        """The file's state (None: no file); raises :class:`PatientError` when it is unreadable."""
        with self._lock:
            return self._runtime()

    def _runtime(self) -> RuntimeState | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._state, self._broken = None, None, None
            return None
        except OSError as exc:
            raise PatientError(f"{self.path}: cannot read the patient assignment ({exc})") from exc
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key != self._seen:
            self._seen = key
            try:
                self._state = RuntimeState.from_json(
                    json.loads(self.path.read_text(encoding="utf-8"))
                )
                self._broken = None
            except (OSError, ValueError, KeyError, TypeError, AttributeError, BedsideError) as exc:
                self._state = None
                self._broken = f"{self.path}: not a patient assignment ({exc})"
                log.warning("%s; readings are held until it is fixed", self._broken)
        if self._broken is not None:
            raise PatientError(self._broken)
        return self._state

    def current(self) -> PatientRef | None:
        """The patient for a reading received now: runtime, else configured; None: hold."""
        try:
            state = self.runtime()
        except PatientError:
            return None
        if state is None or state.patient is None:
            return self.configured
        return state.patient

    def source(self) -> str | None:
        """``"runtime"``, ``"configuration"`` or None (no patient, or an unreadable file)."""
        try:
            state = self.runtime()
        except PatientError:
            return None
        if state is not None and state.patient is not None:
            return "runtime"
        return "configuration" if self.configured is not None else None

    def show(self) -> dict[str, Any]:
        """The ``bedside patient show`` / ``GET /api/patient`` body (without held counts)."""
        try:
            state = self.runtime()
            error = None
        except PatientError as exc:
            state, error = None, str(exc)
        current = None if error is not None else self.current()
        out: dict[str, Any] = {
            "patient": patient_json(current),
            "source": None if error is not None else self.source(),
            "configured": patient_json(self.configured),
            "runtime": None if state is None else state.as_json(),
        }
        if error is not None:
            out["error"] = error
        return out

    # -- changing ------------------------------------------------------------------------------

    def set(self, patient: PatientRef, *, claim_held: bool = False) -> RuntimeState:
        """Assign ``patient`` now; with ``claim_held`` it also claims the readings held since
        the previous patient was cleared (see the module text)."""
        now = self._clock()
        claim = Claim(self._unassigned_since(), now) if claim_held else None
        return self._write(RuntimeState(patient, now, claim))

    def clear(self) -> RuntimeState:
        """Remove the runtime assignment: back to the configured patient, or to none (hold)."""
        return self._write(RuntimeState(None, self._clock()))

    def _unassigned_since(self) -> dt.datetime | None:
        """Start of the present stretch without a runtime patient (None: since ever).

        An unreadable file raises: when it broke is unknown, so no window is safe to claim."""
        state = self.runtime()
        if state is None:
            return None
        return state.changed_at

    def _write(self, state: RuntimeState) -> RuntimeState:
        text = json.dumps(state.as_json(), indent=2) + "\n"
        try:
            write_private_file(self.path, text)
        except OSError as exc:
            raise PatientError(f"{self.path}: cannot write the patient assignment ({exc})") from exc
        self.runtime()  # take the new file as seen
        return state
