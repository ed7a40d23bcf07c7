"""The running gateway's side of the patient assignment.

:class:`PatientService` answers the ingest's "which patient now?" (a ``stat`` of the assignment
file per reading), applies a claim of held readings when it sees one (from ``PUT /api/patient``
at once, from ``bedside patient set --claim-held`` in another process at the next poll, every
``poll_interval_s``; also at start, harmlessly again: a claim is idempotent), and keeps the held
counts that ``/healthz`` shows. docs/contracts.md, "Patient".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from gateway.patients.assignment import (
    PatientAssignment,
    PatientError,
    RuntimeState,
    patient_json,
)

if TYPE_CHECKING:
    from gateway.fhir.observation import PatientRef
    from gateway.store.aio import AsyncStore

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S: Final = 1.0
HELD_NO_PATIENT: Final = "held: no patient"


class PatientService:
    """The assignment of a running gateway; ``run()`` as the ``patient-watch`` task."""

    def __init__(
        self,
        assignment: PatientAssignment,
        store: AsyncStore | None = None,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        on_change: Callable[[PatientRef | None], None] | None = None,
    ) -> None:
        self.assignment = assignment
        self.store = store
        self.on_change = on_change
        self.held = 0  # Bundles held back (cached for /healthz; exact after every refresh)
        self.held_readings = 0
        self.released = 0  # readings released by claims since start
        self.changed = asyncio.Event()  # set after every refresh that saw a change
        self._poll_interval_s = poll_interval_s
        self._applied: RuntimeState | None = None
        self._started = False
        self._lock = asyncio.Lock()

    def current(self) -> PatientRef | None:
        """The patient for a reading received now (None: hold it)."""
        return self.assignment.current()

    def note_held(self, readings: int) -> None:
        """The ingest held one Bundle of ``readings`` back."""
        self.held += 1
        self.held_readings += readings

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._poll_interval_s)

    async def refresh(self) -> None:
        """Take a changed assignment file into account: notify, apply its claim, recount."""
        async with self._lock:
            try:
                state = self.assignment.runtime()
            except PatientError:
                state = None
            if self._started and state is self._applied:
                return
            self._started = True
            self._applied = state
            if self.on_change is not None:
                self.on_change(self.current())
            if state is not None and state.patient is not None and state.claim is not None:
                await self._claim(state)
            await self._recount()
            self.changed.set()

    async def _claim(self, state: RuntimeState) -> None:
        assert state.patient is not None
        assert state.claim is not None
        if self.store is None:
            return
        released = await self.store.release_held(
            state.patient.reference, after=state.claim.after, before=state.claim.before
        )
        if released.readings:
            self.released += released.readings
            log.info(
                "%d held reading(s) in %d Bundle(s) released to %s",
                released.readings,
                released.bundles,
                state.patient.reference,
            )

    async def _recount(self) -> None:
        if self.store is not None:
            usage = await self.store.outbox_usage()
            self.held, self.held_readings = usage.held, usage.held_readings

    # -- the API's operations ----------------------------------------------------------------

    async def assign(self, patient: PatientRef, *, claim_held: bool = False) -> dict[str, Any]:
        await asyncio.to_thread(self.assignment.set, patient, claim_held=claim_held)
        await self.refresh()
        return self.show()

    async def clear(self) -> dict[str, Any]:
        await asyncio.to_thread(self.assignment.clear)
        await self.refresh()
        return self.show()

    def show(self) -> dict[str, Any]:
        """``GET /api/patient``: the assignment with the held counts."""
        return self.assignment.show() | {
            "held": self.held,
            "held_readings": self.held_readings,
        }

    def as_json(self) -> dict[str, Any]:
        """The ``/healthz`` ``patient`` member."""
        current = self.current()
        return {
            "reference": None if current is None else current.reference,
            "source": self.assignment.source(),
            "state": "assigned" if current is not None else HELD_NO_PATIENT,
            "held": self.held,
            "held_readings": self.held_readings,
        }


__all__ = ["DEFAULT_POLL_INTERVAL_S", "HELD_NO_PATIENT", "PatientService", "patient_json"]
