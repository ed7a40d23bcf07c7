"""Firmware of the gateway's sensors, as the API, the CLI and the page use it: what each sensor
runs and whether the repository has an update for it, updates running in the background one per
sensor, confirm and revert (docs/architecture.md, "Sensor firmware"; docs/contracts.md,
"Firmware").

Updates are audited (who asked, the outcome) and logged step by step (:mod:`.update`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.ble.registry import check_address
from gateway.ble.session import SessionState
from gateway.firmware.device import FirmwareError, LinkLostError, Slot, active_slot
from gateway.firmware.image import ImageError, Version, inspect_image
from gateway.firmware.repository import Repository, RepositoryImage
from gateway.firmware.transport import SMP_CHARACTERISTIC
from gateway.firmware.update import Outcome, SensorLinks, UpdateJob, Updater

if TYPE_CHECKING:
    from gateway.ble.manager import SensorManager
    from gateway.ble.session import DeviceSession
    from gateway.firmware.settings import FirmwareSettings

log = logging.getLogger(__name__)

FIRMWARE_REVISION: Final = "Firmware Revision String"
MODEL_NUMBER: Final = "Model Number String"
LIST_TIMEOUT_S: Final = 10.0

# (action, outcome, detail) → an audit entry; the service records who and on which sensor.
Auditor = Callable[..., Awaitable[Any]]


class FirmwareBusyError(FirmwareError):
    """An update or another firmware operation is running on the sensor."""


class UnknownSensorError(FirmwareError):
    """The gateway has no session for the address."""


class NotReadyError(FirmwareError):
    """The sensor is not connected now, or cannot be updated over Bluetooth."""


class NoUpdateError(FirmwareError):
    """The repository has nothing newer for the sensor (or no repository is configured)."""


def _running_version(session: DeviceSession, slots: tuple[Slot, ...] | None) -> str | None:
    """What the sensor runs: its image list where read, else its DIS Firmware Revision's
    first word (``1.4.2 zephyr-…``)."""
    running = active_slot(slots) if slots else None
    if running is not None:
        return running.version
    revision = session.status.info.get(FIRMWARE_REVISION, "").split()
    return revision[0] if revision else None


class FirmwareService:
    """See the module text. ``audit`` records one entry (``gateway.review.audit.AuditTrail``'s
    ``record``); None: not audited."""

    def __init__(
        self,
        manager: SensorManager,
        settings: FirmwareSettings,
        *,
        audit: Auditor | None = None,
        on_finished: Callable[[str, UpdateJob], None] | None = None,
    ) -> None:
        """``on_finished``: told (sensor kind, job) of every update that ended (metrics)."""
        self.manager = manager
        self.settings = settings
        self.repository: Repository | None = None
        self.repository_error: str | None = None
        self._audit = audit
        self._on_finished = on_finished
        self._updater = Updater(settings)
        self._jobs: dict[str, UpdateJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._slots: dict[str, tuple[Slot, ...]] = {}
        self.reload()

    # -- repository --------------------------------------------------------------------------------

    def reload(self) -> None:
        """(Re)read ``firmware.repository``; a bad one is reported, not fatal."""
        directory = self.settings.repository
        self.repository, self.repository_error = None, None
        if directory is None:
            return
        try:
            self.repository = Repository.load(Path(directory))
        except FirmwareError as exc:
            self.repository_error = str(exc)
            log.warning("firmware repository: %s", exc)

    def _update_for(self, session: DeviceSession, running: str | None) -> RepositoryImage | None:
        model = session.status.info.get(MODEL_NUMBER)
        if self.repository is None or model is None or running is None:
            return None
        try:
            return self.repository.update_for(model, Version.parse(running))
        except ImageError:
            return None

    # -- status ------------------------------------------------------------------------------------

    def sensor_firmware(self, address: str) -> dict[str, Any] | None:
        """The ``firmware`` part of a sensor row: version, model, update available, last job."""
        session = self.manager.session(address)
        if session is None:
            return None
        running = _running_version(session, self._slots.get(address))
        update = self._update_for(session, running)
        job = self._jobs.get(address)
        return {
            "version": running,
            "model": session.status.info.get(MODEL_NUMBER),
            "updatable": session.has_characteristic(SMP_CHARACTERISTIC) or address in self._slots,
            "update": None
            if update is None
            else {"version": str(update.version), "file": update.path.name},
            "job": None if job is None else job.as_json(),
        }

    def annotate(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sensor rows (``SensorManager.sensors()``) with their ``firmware`` part."""
        return [row | {"firmware": self.sensor_firmware(row["address"])} for row in rows]

    async def list(self) -> list[dict[str, Any]]:
        """Every sensor with a session: the ``firmware`` part plus its image slots read now
        (``images``: None when it is not connected, has no SMP, or is busy updating — then the
        last slots read, if any)."""
        sessions = (self.manager.session(status.address) for status in self.manager.statuses())
        live = [s for s in sessions if s is not None]
        read = await asyncio.gather(*(self._read_slots(s) for s in live))
        rows = []
        for session, slots in zip(live, read, strict=True):
            address = session.status.address
            row = {
                "address": address,
                "name": session.status.name,
                "kind": session.status.kind,
                "state": str(session.status.state),
                "images": None if slots is None else [slot.as_json() for slot in slots],
            }
            rows.append(row | (self.sensor_firmware(address) or {}))
        return rows

    async def _read_slots(self, session: DeviceSession) -> tuple[Slot, ...] | None:
        address = session.status.address
        lock = self._lock(address)
        if lock.locked():  # busy: as the running command last read them
            job = self._jobs.get(address)
            return job.slots if job is not None and job.slots else self._slots.get(address)
        if session.status.state is not SessionState.STREAMING or not session.has_characteristic(
            SMP_CHARACTERISTIC
        ):
            return self._slots.get(address)
        async with lock:
            try:
                async with asyncio.timeout(LIST_TIMEOUT_S):
                    slots = await SensorLinks(session, self.settings).slots()
            except (FirmwareError, TimeoutError) as exc:
                log.info("%s: image list not read: %s", session.status.name, exc)
                return self._slots.get(address)
        self._slots[address] = slots
        return slots

    def job(self, address: str) -> UpdateJob | None:
        return self._jobs.get(check_address(address))

    # -- operations --------------------------------------------------------------------------------

    def _lock(self, address: str) -> asyncio.Lock:
        return self._locks.setdefault(address, asyncio.Lock())

    def _session(self, address: str) -> DeviceSession:
        address = check_address(address)
        session = self.manager.session(address)
        if session is None:
            raise UnknownSensorError(
                f"no sensor {address} on this gateway: accept it first (bedside sensors list)"
            )
        if session.status.state is not SessionState.STREAMING:
            raise NotReadyError(
                f"{session.status.name} is {session.status.state}, not connected: wait until it "
                "streams"
            )
        if not session.has_characteristic(SMP_CHARACTERISTIC):
            raise NotReadyError(
                f"{session.status.name} has no MCUmgr SMP service: its firmware cannot be "
                "updated over Bluetooth"
            )
        return session

    def _claim(self, address: str) -> asyncio.Lock:
        lock = self._lock(address)
        job = self._jobs.get(address)
        running = job is not None and not job.done
        if running or (lock.locked() and job is None):  # a finished job may still be auditing
            doing = f"an update to {job.version} is" if job and running else "a command is"
            raise FirmwareBusyError(f"{doing} running on {address}: wait until it ends")
        return lock

    def start_update(
        self,
        address: str,
        data: bytes,
        *,
        force: bool = False,
        confirm: bool = True,
        by: str | None = None,
        role: str | None = None,
    ) -> UpdateJob:
        """Check the file, then run the update in the background; the job is returned at once.

        Raises ImageError (not an intact image), UnknownSensorError, NotReadyError,
        FirmwareBusyError."""
        if len(data) > self.settings.max_image_bytes:
            raise ImageError(
                f"the image is {len(data)} bytes, more than firmware.max_image_bytes "
                f"({self.settings.max_image_bytes})"
            )
        session = self._session(address)
        image = inspect_image(data)
        address = session.status.address
        lock = self._claim(address)
        job = UpdateJob(
            address=address,
            name=session.status.name,
            version=str(image.version),
            image_hash=image.hash_hex,
            size=len(data),
            by=by,
            from_version=_running_version(session, self._slots.get(address)),
        )
        self._jobs[address] = job
        links = SensorLinks(session, self.settings)

        async def audited(outcome: Outcome, message: str) -> None:  # before the API shows it
            ok = outcome in (Outcome.CONFIRMED, Outcome.TESTING)
            await self._record(job, role, message, success=ok)

        job.on_finish = audited

        async def run() -> None:
            async with lock:
                await self._record(job, role, "update started", success=True)
                await self._updater.run(job, links, data, image, force=force, confirm=confirm)
                if job.slots:
                    self._slots[address] = job.slots
                if self._on_finished is not None:
                    self._on_finished(session.status.kind, job)

        task = asyncio.create_task(run(), name=f"firmware-update-{address}")
        self._tasks[address] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(address, None) if self._tasks.get(address) is t else None
        )
        return job

    def start_repository_update(
        self,
        address: str,
        *,
        force: bool = False,
        confirm: bool = True,
        by: str | None = None,
        role: str | None = None,
    ) -> UpdateJob:
        """Install the repository's newest image for the sensor's model (newer than what it
        runs, unless ``force``)."""
        session = self._session(address)
        model = session.status.info.get(MODEL_NUMBER)
        if self.repository is None:
            why = self.repository_error or "no firmware.repository is configured"
            raise NoUpdateError(f"no firmware repository to update from: {why}")
        running = _running_version(session, self._slots.get(session.status.address))
        chosen = (
            self.repository.latest(model or "") if force else self._update_for(session, running)
        )
        if chosen is None:
            raise NoUpdateError(
                f"the repository has no newer image for {session.status.name} "
                f"(model {model or 'unknown'}, running {running or 'an unknown version'})"
            )
        return self.start_update(
            address, chosen.path.read_bytes(), force=force, confirm=confirm, by=by, role=role
        )

    async def confirm(
        self, address: str, *, by: str | None = None, role: str | None = None
    ) -> tuple[Slot, ...]:
        """Confirm the image the sensor runs (one under test stays for good)."""
        session = self._session(address)
        async with (
            self._claim(session.status.address),
            SensorLinks(session, self.settings).link() as device,
        ):
            slots = await device.confirm()
        self._slots[session.status.address] = slots
        running = active_slot(slots)
        await self._audit_command(
            session, role, by, f"confirmed {running.version if running else '?'}"
        )
        return slots

    async def revert(
        self, address: str, *, by: str | None = None, role: str | None = None
    ) -> tuple[Slot, ...]:
        """Go back to the other image: an image under test is dropped by restarting the sensor
        unconfirmed (MCUboot reverts); a confirmed one is replaced for good by the previous image
        in the secondary slot. Raises FirmwareError when there is nothing to go back to."""
        session = self._session(address)
        links = SensorLinks(session, self.settings)
        async with self._claim(session.status.address):
            async with links.link() as device:
                slots = await device.slots()
                running = active_slot(slots)
                other = next((s for s in slots if not s.active and s.bootable), None)
                if running is None or (running.confirmed and other is None):
                    raise FirmwareError(
                        f"{session.status.name} has no previous image to go back to"
                    )
                if running.confirmed and other is not None:
                    await device.confirm(bytes.fromhex(other.hash))
                await links.restart(device)
            slots = await links.slots()
        self._slots[session.status.address] = slots
        now = active_slot(slots)
        await self._audit_command(
            session, role, by, f"reverted from {running.version} to {now.version if now else '?'}"
        )
        return slots

    async def close(self) -> None:
        """Stop running updates (the gateway stops): an image under test that was not confirmed
        is reverted by MCUboot at the sensor's next restart."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- audit -------------------------------------------------------------------------------------

    async def _record(self, job: UpdateJob, role: str | None, text: str, *, success: bool) -> None:
        detail = f"firmware {job.from_version or '?'} -> {job.version}: {text}"
        await self._write_audit(job.by, role, job.address, detail, success=success)

    async def _audit_command(
        self, session: DeviceSession, role: str | None, by: str | None, text: str
    ) -> None:
        await self._write_audit(by, role, session.status.address, f"firmware {text}", success=True)

    async def _write_audit(
        self, by: str | None, role: str | None, address: str, detail: str, *, success: bool
    ) -> None:
        if self._audit is None:
            return
        try:
            await self._audit(
                "update",
                user=by,
                role=role,
                what="Device",
                what_id=address,
                detail=detail,
                outcome="success" if success else "failure",
            )
        except Exception:  # the update happened; a lost audit entry is logged loudly
            log.exception("firmware: could not record the audit entry %r", detail)


__all__ = [
    "FirmwareBusyError",
    "FirmwareService",
    "LinkLostError",
    "NoUpdateError",
    "NotReadyError",
    "UnknownSensorError",
]
