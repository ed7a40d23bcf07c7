"""MCUmgr on one connected sensor: its image slots, upload, test, confirm, erase, reset, echo and
task statistics, with ``smpclient`` over the session's own connection
(:class:`~.transport.SessionTransport`).

What the device answers is turned into facts (:class:`Slot`) or one sentence:
:class:`DeviceRefusedError` when the device says no (its MCUmgr error code, in words), and
:class:`LinkLostError` when the link dropped or the device stopped answering. Image management
and OS management: MCUmgr SMP groups 1 and 0 (Zephyr, "SMP Protocol Specification").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, Self

from smp.error import MGMT_ERR
from smp.image_management import IMG_MGMT_ERR
from smp.os_management import OS_MGMT_RET_RC
from smpclient import SMPClient
from smpclient.exceptions import SMPClientException, SMPUploadError
from smpclient.generics import error
from smpclient.requests.image_management import ImageErase, ImageStatesRead, ImageStatesWrite
from smpclient.requests.os_management import EchoWrite, ResetWrite, TaskStatisticsRead
from smpclient.transport import SMPTransportDisconnected

from gateway.errors import BedsideError
from gateway.firmware.transport import SessionTransport

if TYPE_CHECKING:
    from bleak import BleakClient
    from smp.image_management import ImageState

log = logging.getLogger(__name__)

LINK_ERRORS: Final = (SMPTransportDisconnected, TimeoutError, OSError)

# What an MCUmgr error code means to the person updating the sensor.
IMAGE_ERRORS: Final[dict[int, str]] = {
    IMG_MGMT_ERR.INVALID_HASH: "the image's SHA-256 does not match (corrupted on the way)",
    IMG_MGMT_ERR.HASH_NOT_FOUND: "it has no image with that hash",
    IMG_MGMT_ERR.IMAGE_ALREADY_PENDING: "an image is already set to boot at the next restart",
    IMG_MGMT_ERR.INVALID_IMAGE_HEADER: "the image header is not valid",
    IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC: "the file is not an MCUboot image",
    IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE: "the image does not fit its slot",
    IMG_MGMT_ERR.INVALID_IMAGE_DATA_OVERRUN: "more data came than the image length announced",
    IMG_MGMT_ERR.INVALID_TLV: "the image's TLV area is malformed",
    IMG_MGMT_ERR.NO_TLVS: "the image has no TLV area",
    IMG_MGMT_ERR.IMAGE_CONFIRMATION_DENIED: "the running image must be confirmed first",
    IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED: "the running image cannot be set for test",
}
GENERAL_ERRORS: Final[dict[int, str]] = {
    MGMT_ERR.ENOTSUP: "it does not support the command",
    MGMT_ERR.EBUSY: "it is busy with another command",
    MGMT_ERR.EINVAL: "it found the request invalid",
    MGMT_ERR.ENOMEM: "it ran out of memory",
    MGMT_ERR.EACCESSDENIED: "it denied access",
}


class FirmwareError(BedsideError):
    """A firmware operation that did not happen (the message says why, in one sentence)."""


class DeviceRefusedError(FirmwareError):
    """The sensor answered with an MCUmgr error (``code``: the group's or the general code)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LinkLostError(FirmwareError):
    """The link dropped, or the sensor stopped answering, in the middle of an operation."""


def _words(code: IntEnum) -> str:
    return code.name.lower().replace("_", " ")


def refusal(what: str, response: Any) -> DeviceRefusedError:
    """The sentence for an SMP error response to ``what`` (v1 ``rc`` or v2 ``err``)."""
    err = getattr(response, "err", None)
    if err is not None:  # SMP v2: the group's own code
        code = int(err.rc)
        text = IMAGE_ERRORS.get(code) if isinstance(err.rc, IMG_MGMT_ERR) else None
        reason = text or (_words(err.rc) if isinstance(err.rc, IntEnum) else f"error {code}")
    else:
        code = int(response.rc)
        reason = GENERAL_ERRORS.get(code) or _words(MGMT_ERR(code))
        if getattr(response, "rsn", None):
            reason += f" ({response.rsn})"
    return DeviceRefusedError(f"the sensor refused to {what}: {reason}", code)


@dataclass(frozen=True, slots=True)
class Slot:
    """One image slot as the sensor lists it (MCUmgr "image state")."""

    image: int
    slot: int
    version: str
    hash: str  # hex
    bootable: bool
    pending: bool
    confirmed: bool
    active: bool
    permanent: bool

    @classmethod
    def from_state(cls, state: ImageState) -> Slot:
        return cls(
            image=state.image or 0,
            slot=state.slot,
            version=state.version,
            hash=bytes(state.hash).hex() if state.hash is not None else "",
            bootable=bool(state.bootable),
            pending=bool(state.pending),
            confirmed=bool(state.confirmed),
            active=bool(state.active),
            permanent=bool(state.permanent),
        )

    def as_json(self) -> dict[str, Any]:
        """As ``bedside firmware list`` shows a slot."""
        return {
            "slot": self.slot,
            "version": self.version,
            "hash": self.hash,
            "active": self.active,
            "confirmed": self.confirmed,
            "pending": self.pending,
            "bootable": self.bootable,
            "permanent": self.permanent,
        }


def active_slot(slots: tuple[Slot, ...]) -> Slot | None:
    """The image the sensor runs."""
    return next((s for s in slots if s.active), None)


class FirmwareLink:
    """MCUmgr on one connected sensor, for as long as its link lasts::

    async with FirmwareLink(client, address, timeout_s) as device:
        slots = await device.slots()
    """

    def __init__(
        self,
        client: BleakClient,
        address: str,
        timeout_s: float,
        link_lost: asyncio.Event | None = None,
    ) -> None:
        """``link_lost``: the session's event set when this link drops."""
        self.address = address
        self.transport = SessionTransport(client, link_lost)
        self._smp = SMPClient(self.transport, address, timeout_s)
        self._timeout_s = timeout_s

    @property
    def supported(self) -> bool:
        """Whether the sensor offers MCUmgr over Bluetooth."""
        return self.transport.supported

    async def __aenter__(self) -> Self:
        if not self.supported:
            raise FirmwareError(f"{self.address} has no MCUmgr SMP service: it cannot be updated")
        try:
            await self._smp.connect(self._timeout_s)
        except (*LINK_ERRORS, SMPClientException) as exc:
            raise LinkLostError(f"{self.address} did not answer MCUmgr requests") from exc
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._smp.disconnect()

    async def _request(self, what: str, request: Any, timeout_s: float | None = None) -> Any:
        try:
            response = await self._smp.request(request, timeout_s)
        except LINK_ERRORS as exc:
            raise LinkLostError(
                f"the link to {self.address} dropped while asking to {what}"
            ) from exc
        except SMPClientException as exc:
            raise FirmwareError(f"{self.address} answered a request to {what} wrongly") from exc
        if error(response):
            raise refusal(what, response)
        return response

    async def slots(self) -> tuple[Slot, ...]:
        """The image slots: version, hash, and whether each is active, confirmed, pending."""
        response = await self._request("list its images", ImageStatesRead())
        return tuple(Slot.from_state(state) for state in response.images)

    async def upload(self, image: bytes, progress: Callable[[int], None]) -> None:
        """Upload ``image`` to the secondary slot, resuming where the sensor stopped if an
        earlier upload of the same image was interrupted (the first request carries the image's
        SHA-256, which the device uses to continue a broken upload). ``progress`` is told each
        offset the device acknowledges."""
        try:
            async for offset in self._smp.upload(image, subsequent_timeout_s=self._timeout_s):
                progress(offset)
        except LINK_ERRORS as exc:
            raise LinkLostError(f"the link to {self.address} dropped during the upload") from exc
        except SMPUploadError as exc:
            response = exc.args[0] if exc.args else None
            if response is not None and not isinstance(response, str):
                raise refusal("take the image", response) from exc
            raise DeviceRefusedError(
                f"the sensor did not take the image whole: {response}", int(MGMT_ERR.ECORRUPT)
            ) from exc
        except SMPClientException as exc:
            raise FirmwareError(f"{self.address} answered the upload wrongly") from exc

    async def test(self, image_hash: bytes) -> tuple[Slot, ...]:
        """Mark the uploaded image to boot, under test, at the next restart."""
        response = await self._request(
            "test the new image", ImageStatesWrite(hash=image_hash, confirm=False)
        )
        return tuple(Slot.from_state(state) for state in response.images)

    async def confirm(self, image_hash: bytes | None = None) -> tuple[Slot, ...]:
        """Confirm the running image (``None``), or make ``image_hash`` boot for good."""
        response = await self._request(
            "confirm the image", ImageStatesWrite(hash=image_hash, confirm=True)
        )
        return tuple(Slot.from_state(state) for state in response.images)

    async def erase(self) -> None:
        """Empty the secondary slot."""
        await self._request("erase its secondary slot", ImageErase())

    async def reset(self) -> None:
        """Restart the sensor (it answers, then the link drops)."""
        await self._request("restart", ResetWrite())

    async def echo(self, text: str) -> str:
        response = await self._request("echo", EchoWrite(d=text))
        return str(response.r)

    async def tasks(self) -> dict[str, dict[str, Any]] | None:
        """Task statistics (stack use, context switches…), None where the device offers none."""
        try:
            response = await self._request("report its tasks", TaskStatisticsRead())
        except DeviceRefusedError as exc:
            if exc.code in (MGMT_ERR.ENOTSUP, OS_MGMT_RET_RC.UNKNOWN):
                return None
            raise
        return {name: task.model_dump(exclude_none=True) for name, task in response.tasks.items()}


__all__ = [
    "DeviceRefusedError",
    "FirmwareError",
    "FirmwareLink",
    "LinkLostError",
    "Slot",
    "active_slot",
    "refusal",
]
