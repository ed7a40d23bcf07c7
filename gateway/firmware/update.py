"""The safe firmware update of one sensor (docs/architecture.md, "Sensor firmware"):

1. **check** the image (MCUboot header and TLVs, SHA-256) against what the sensor runs: an image
   that is not newer is refused unless forced, the running image is not sent again;
2. **upload** it to the secondary slot over the session's link, acknowledged offset by offset; a
   link that drops is waited for and the upload **resumes** where the sensor stopped;
3. **test**: mark it to boot under test, **restart** the sensor (MCUboot swaps the slots);
4. **verify**: once the session is back (stored records fetched first), the sensor must run the
   new image *and* stay connected and deliver valid measurements for ``firmware.check_s``;
5. **confirm** it — or, when the check fails, restart the sensor unconfirmed so that MCUboot
   reverts to the previous image, and report the update as failed with the reason.

Every step is logged and kept in the :class:`UpdateJob` the API and the page show. The sensor's
session keeps streaming throughout; only the restart interrupts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gateway.ble.session import DeviceSession, SessionState
from gateway.firmware.device import (
    FirmwareError,
    FirmwareLink,
    LinkLostError,
    Slot,
    active_slot,
)
from gateway.firmware.image import FirmwareImage, ImageError, Version, upload_refusal

if TYPE_CHECKING:
    from gateway.firmware.settings import FirmwareSettings

log = logging.getLogger(__name__)

STREAMING: Final = frozenset({SessionState.STREAMING})
NOT_STREAMING: Final = frozenset(SessionState) - STREAMING


class Phase(enum.StrEnum):
    """Where an update is."""

    CHECKING = "checking"
    UPLOADING = "uploading"
    TESTING = "testing"
    RESTARTING = "restarting"
    VERIFYING = "verifying"
    CONFIRMING = "confirming"
    REVERTING = "reverting"
    DONE = "done"


class Outcome(enum.StrEnum):
    """How an update ended."""

    CONFIRMED = "confirmed"  # the new image runs and is confirmed
    TESTING = "testing"  # the new image runs under test (asked not to confirm)
    REFUSED = "refused"  # nothing changed: the image or the sensor said no
    REVERTED = "reverted"  # the new image failed its check: the previous one runs again
    FAILED = "failed"  # could not finish (the message says where the sensor stands)


class UpdateFailedError(FirmwareError):
    """The update ends with ``outcome`` (the message is the reason)."""

    def __init__(self, message: str, outcome: Outcome = Outcome.FAILED) -> None:
        super().__init__(message)
        self.outcome = outcome


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(eq=False)
class UpdateJob:
    """One update, as the API and the page show it while it runs and after."""

    address: str
    name: str
    version: str  # the image's
    image_hash: str
    size: int
    by: str | None = None
    phase: Phase = Phase.CHECKING
    offset: int = 0
    resumes: int = 0
    from_version: str | None = None
    outcome: Outcome | None = None
    message: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    started_at: str = field(default_factory=_now)
    finished_at: str | None = None
    revision: int = 0
    slots: tuple[Slot, ...] = ()  # as last read from the sensor
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    on_finish: Callable[[Outcome, str], Awaitable[None]] | None = field(default=None, repr=False)
    """Awaited with the outcome before anyone sees it (the service's audit entry)."""

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def _bump(self) -> None:
        self.revision += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def step(self, phase: Phase, text: str) -> None:
        """Enter ``phase``; ``text`` is logged and kept."""
        self.phase = phase
        self.steps.append({"at": _now(), "phase": str(phase), "text": text})
        log.info("%s (%s) firmware %s: %s", self.name, self.address, phase, text)
        self._bump()

    def progress(self, offset: int) -> None:
        self.offset = offset
        self._bump()

    async def finish(self, outcome: Outcome, message: str) -> None:
        """End the job: :attr:`on_finish` first, then the outcome is visible."""
        if self.on_finish is not None:
            await self.on_finish(outcome, message)
        self.outcome, self.message, self.finished_at = outcome, message, _now()
        self.step(Phase.DONE, f"{outcome}: {message}")

    async def changed(self, after: int) -> None:
        """Return once the job's revision is past ``after``."""
        while self.revision <= after:
            await self._changed.wait()

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "version": self.version,
            "hash": self.image_hash,
            "from_version": self.from_version,
            "by": self.by,
            "phase": str(self.phase),
            "offset": self.offset,
            "size": self.size,
            "percent": round(100 * self.offset / self.size, 1) if self.size else 0.0,
            "resumes": self.resumes,
            "outcome": str(self.outcome) if self.outcome is not None else None,
            "message": self.message,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "steps": list(self.steps),
            "revision": self.revision,
        }


def _version(slot: Slot) -> Version | None:
    try:
        return Version.parse(slot.version)
    except ImageError:
        return None


class SensorLinks:
    """Opens MCUmgr on a sensor's session, waiting for the session where it is not streaming."""

    def __init__(self, session: DeviceSession, settings: FirmwareSettings) -> None:
        self.session = session
        self.settings = settings

    @property
    def name(self) -> str:
        return self.session.status.name

    async def connected(self, timeout_s: float | None = None) -> None:
        """Wait until the session streams on a live client (``reconnect_timeout_s``)."""
        wait = timeout_s if timeout_s is not None else self.settings.reconnect_timeout_s
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self.session.wait_for_state(STREAMING)
                    if self.session.client is not None:
                        return
                    await self.session.wait_for_state(NOT_STREAMING)
        except TimeoutError:
            state = self.session.status.state
            raise LinkLostError(
                f"{self.name} did not come back within {wait:g} s (it is {state})"
            ) from None

    @contextlib.asynccontextmanager
    async def link(self) -> AsyncIterator[FirmwareLink]:
        await self.connected()
        client = self.session.client
        if client is None:
            raise LinkLostError(f"the link to {self.name} dropped")
        timeout_s, lost = self.settings.request_timeout_s, self.session.link_lost
        async with FirmwareLink(client, self.name, timeout_s, lost) as device:
            yield device

    async def slots(self) -> tuple[Slot, ...]:
        async with self.link() as device:
            return await device.slots()

    async def restart(self, device: FirmwareLink) -> None:
        """Restart the sensor and wait until its session streams again (a new connection)."""
        before = self.session.status.reconnects
        with contextlib.suppress(LinkLostError):  # the link may drop before the answer arrives
            await device.reset()
        wait = self.settings.reconnect_timeout_s
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self.session.wait_for_state(STREAMING)
                    if self.session.status.reconnects > before and self.session.client:
                        return
                    await self.session.wait_for_state(NOT_STREAMING)
        except TimeoutError:
            raise LinkLostError(
                f"{self.name} did not come back within {wait:g} s of its restart"
            ) from None


class Updater:
    """Runs :class:`UpdateJob` s (see the module text)."""

    def __init__(self, settings: FirmwareSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock

    async def run(
        self,
        job: UpdateJob,
        links: SensorLinks,
        data: bytes,
        image: FirmwareImage,
        *,
        force: bool = False,
        confirm: bool = True,
    ) -> UpdateJob:
        """Carry the update to its end; the job says how it ended (never raises a
        :class:`FirmwareError`)."""
        try:
            old = await self._check(job, links, image, force=force)
            await self._upload(job, links, data, image)
            await self._boot_under_test(job, links, image)
            reason = await self._prove(job, links)
            if reason is not None:
                await self._revert(job, links, old, image, reason)
            elif confirm:
                await self._confirm(job, links, image)
            else:
                await job.finish(
                    Outcome.TESTING,
                    f"{image.version} runs under test, not confirmed: confirm it to keep it, "
                    f"or revert to {old.version}",
                )
        except UpdateFailedError as exc:
            await job.finish(exc.outcome, str(exc))
        except FirmwareError as exc:
            await job.finish(Outcome.FAILED, str(exc))
        return job

    async def _check(
        self, job: UpdateJob, links: SensorLinks, image: FirmwareImage, *, force: bool
    ) -> Slot:
        job.step(Phase.CHECKING, f"image {image.version} ({image.size} bytes) checked")
        slots = job.slots = await links.slots()
        running = active_slot(slots)
        if running is None:
            raise UpdateFailedError(f"{links.name} lists no running image", Outcome.REFUSED)
        job.from_version = running.version
        if running.hash == image.hash_hex:
            raise UpdateFailedError(
                f"{links.name} already runs this image ({running.version})", Outcome.REFUSED
            )
        version = _version(running)
        if version is None and not force:
            raise UpdateFailedError(
                f"{links.name} runs version {running.version!r}, which cannot be compared; "
                "give --force to install the image anyway",
                Outcome.REFUSED,
            )
        why = upload_refusal(image, version or Version(0, 0, 0), force=force)
        if why is not None:
            raise UpdateFailedError(why, Outcome.REFUSED)
        if any(slot.pending for slot in slots):
            raise UpdateFailedError(
                f"{links.name} has an image set to boot at its next restart: confirm or revert "
                "it first",
                Outcome.REFUSED,
            )
        return running

    async def _upload(
        self, job: UpdateJob, links: SensorLinks, data: bytes, image: FirmwareImage
    ) -> None:
        job.step(Phase.UPLOADING, f"uploading {len(data)} bytes")
        started = self._clock()
        while True:
            try:
                async with links.link() as device:
                    await device.upload(data, job.progress)
                break
            except LinkLostError:
                if job.resumes >= self.settings.max_resumes:
                    raise UpdateFailedError(
                        f"the link to {links.name} dropped {job.resumes + 1} times during the "
                        f"upload; stopped at {job.offset} of {len(data)} bytes "
                        f"({job.from_version} still runs)"
                    ) from None
                job.resumes += 1
                job.step(
                    Phase.UPLOADING,
                    f"the link dropped at {job.offset} of {len(data)} bytes; resuming once "
                    "the sensor is back",
                )
            except FirmwareError as exc:
                raise UpdateFailedError(
                    f"{exc}; {job.from_version} still runs", Outcome.REFUSED
                ) from None
        took = max(self._clock() - started, 1e-6)
        slots = job.slots = await links.slots()
        if not any(s.hash == image.hash_hex and not s.active for s in slots):
            raise UpdateFailedError(
                f"{links.name} does not list the uploaded image; {job.from_version} still runs",
                Outcome.REFUSED,
            )
        job.step(
            Phase.UPLOADING,
            f"uploaded in {took:.1f} s ({len(data) / took / 1024:.1f} KiB/s"
            + (f", {job.resumes} resume(s))" if job.resumes else ")"),
        )

    async def _boot_under_test(
        self, job: UpdateJob, links: SensorLinks, image: FirmwareImage
    ) -> None:
        job.step(Phase.TESTING, f"marking {image.version} to boot under test")
        async with links.link() as device:
            await device.test(image.sha256)
            job.step(Phase.RESTARTING, "restarting the sensor into the new image")
            await links.restart(device)
        job.slots = await links.slots()
        running = active_slot(job.slots)
        if running is None or running.hash != image.hash_hex:
            now = running.version if running is not None else "no image"
            raise UpdateFailedError(
                f"MCUboot did not boot {image.version} (the sensor runs {now}): it may have "
                "refused its signature",
                Outcome.REVERTED,
            )

    async def _prove(self, job: UpdateJob, links: SensorLinks) -> str | None:
        """Why the new firmware failed its check, None when it passed."""
        check_s = self.settings.check_s
        job.step(
            Phase.VERIFYING,
            f"running the new image; checking it stays connected and measures for {check_s:g} s",
        )
        status = links.session.status
        valid_before, bad_before = status.observations, status.decode_errors
        started = self._clock()
        try:
            async with asyncio.timeout(check_s):
                await links.session.wait_for_state(NOT_STREAMING)
        except TimeoutError:
            dropped = False
        else:
            dropped = True
        valid = status.observations - valid_before
        bad = status.decode_errors - bad_before
        if dropped:
            return f"the sensor dropped the link {self._clock() - started:.1f} s into the check"
        if valid == 0:
            malformed = f" ({bad} malformed)" if bad else ""
            return f"the sensor sent no valid measurement in {check_s:g} s{malformed}"
        if bad > valid:
            return f"more malformed values ({bad}) than valid ones ({valid}) in {check_s:g} s"
        job.step(Phase.VERIFYING, f"{valid} valid measurement(s), {bad} malformed")
        return None

    async def _confirm(self, job: UpdateJob, links: SensorLinks, image: FirmwareImage) -> None:
        job.step(Phase.CONFIRMING, f"confirming {image.version}")
        async with links.link() as device:
            job.slots = await device.confirm()
        running = active_slot(job.slots)
        if running is None or running.hash != image.hash_hex or not running.confirmed:
            raise UpdateFailedError(f"{links.name} did not confirm {image.version}")
        await job.finish(Outcome.CONFIRMED, f"{links.name} runs {image.version}, confirmed")

    async def _revert(
        self, job: UpdateJob, links: SensorLinks, old: Slot, image: FirmwareImage, reason: str
    ) -> None:
        job.step(
            Phase.REVERTING,
            f"{reason}; restarting the sensor so that MCUboot goes back to {old.version}",
        )
        async with links.link() as device:
            await links.restart(device)
        job.slots = await links.slots()
        running = active_slot(job.slots)
        if running is not None and running.hash == old.hash:
            raise UpdateFailedError(
                f"{image.version} failed its check: {reason}; MCUboot went back to "
                f"{old.version}, which runs again",
                Outcome.REVERTED,
            )
        now = running.version if running is not None else "no image"
        raise UpdateFailedError(
            f"{image.version} failed its check: {reason}; after the restart the sensor runs {now}"
        )
