"""MCUboot's two image slots and what Zephyr's image management does with them, as a simulated
sensor keeps them (its own code: the simulator and the gateway check each other).

- **Upload** goes to the secondary slot, chunk by chunk at the offset the device expects (a chunk
  at another offset is answered with the expected one, so a client resumes where the device
  stopped); the first chunk carries the total length and must start with the MCUboot magic; the
  last one completes the image, which is then checked: header, TLV area, SHA256 TLV equal to the
  SHA-256 of header + firmware + protected TLVs. A bad image leaves the slot empty.
- **Upload sessions** (Zephyr MCUmgr, SMP group 1 "Image upload": the ``sha`` of the first
  request "is used to identify an upload session (e.g. to allow MCUmgr to continue a broken
  session), and for image verification purposes"): an ``off`` 0 request whose ``sha`` and ``len``
  equal those of the upload in progress writes nothing and is answered with the offset reached,
  from which the client continues; any other ``off`` 0 request starts anew. The last chunk of an
  upload that had a ``sha`` also answers ``match``: whether the SHA-256 of the whole image
  received equals it (Zephyr with ``CONFIG_IMG_ENABLE_IMAGE_CHECK``). The partial upload is RAM
  state: it outlives a dropped link, not a reset.
- **Test** (state write ``confirm: false`` with the secondary's hash) marks it pending; **confirm**
  with that hash marks it pending and permanent; confirm with no hash (or the running image's)
  confirms the running image.
- **Reset**: a pending image is swapped into the primary slot — under test (unconfirmed) or for
  good; an image under test that was not confirmed before the next reset is swapped back (revert).
- **Erase** empties the secondary slot (not while it is pending).

Errors carry the ``IMG_MGMT_ERR`` codes Zephyr answers with (``smp.image_management``).
MCUboot's image format: MCUboot ``docs/design.md``, "Image format".
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Final

from smp.image_management import IMG_MGMT_ERR

IMAGE_MAGIC: Final = 0x96F3B83D
TLV_INFO_MAGIC: Final = 0x6907
TLV_PROT_INFO_MAGIC: Final = 0x6908
TLV_SHA256: Final = 0x10
HEADER: Final = struct.Struct("<IIHHIIBBHI")  # magic … version (major, minor, revision, build)
TLV_INFO: Final = struct.Struct("<HH")
TLV: Final = struct.Struct("<HH")
SLOT_SIZE: Final = 0x40000  # 256 KiB, the size of each slot on the simulated flash
SHA_SIZE: Final = 32  # IMG_MGMT_DATA_SHA_LEN: an upload's ``sha`` is at most a full SHA-256
# Firmware bytes containing this marker "crash" once booted: the simulated sensor still runs its
# SMP server (so MCUmgr can revert or replace it) but every measurement packet it sends is
# malformed (firmware_sim.management.Management.crashing).
CRASH_MARKER: Final = b"BEDSIDE-SIM:CRASH"


class DfuError(Exception):
    """An image-management request the device refuses: the code it answers and why."""

    def __init__(self, code: IMG_MGMT_ERR, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class SlotImage:
    """An image in a slot: its bytes, its version text and the hash its SHA256 TLV holds."""

    data: bytes
    version: str
    hash: bytes

    @property
    def firmware(self) -> bytes:
        """The firmware: what follows the header, up to the TLV area (MCUboot "Image format")."""
        fields = HEADER.unpack_from(self.data)
        header_size, image_size = fields[2], fields[4]
        return self.data[header_size : header_size + image_size]

    @property
    def crashes(self) -> bool:
        """Whether the firmware carries :data:`CRASH_MARKER` (it misbehaves once booted)."""
        return CRASH_MARKER in self.firmware


def read_image(data: bytes) -> SlotImage:
    """The image's version and hash, after checking it as the device does."""
    if len(data) < HEADER.size:
        raise DfuError(IMG_MGMT_ERR.INVALID_IMAGE_HEADER, "shorter than an image header")
    magic, _load, hdr_size, prot_size, img_size, _flags, major, minor, rev, build = (
        HEADER.unpack_from(data)
    )
    if magic != IMAGE_MAGIC:
        raise DfuError(IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC, "no MCUboot magic")
    hashed = hdr_size + img_size + prot_size
    tlvs: dict[int, bytes] = {}
    at = hdr_size + img_size
    for magic_expected, present in ((TLV_PROT_INFO_MAGIC, prot_size > 0), (TLV_INFO_MAGIC, True)):
        if not present:
            continue
        if len(data) < at + TLV_INFO.size:
            raise DfuError(IMG_MGMT_ERR.NO_TLVS, "the image has no TLV area")
        info_magic, total = TLV_INFO.unpack_from(data, at)
        if info_magic != magic_expected or at + total > len(data):
            raise DfuError(IMG_MGMT_ERR.INVALID_TLV, "the TLV area is malformed")
        end, at = at + total, at + TLV_INFO.size
        while at < end:
            if at + TLV.size > end:
                raise DfuError(IMG_MGMT_ERR.INVALID_TLV, "a TLV runs past its area")
            kind, length = TLV.unpack_from(data, at)
            tlvs[kind] = data[at + TLV.size : at + TLV.size + length]
            at += TLV.size + length
        if at != end:
            raise DfuError(IMG_MGMT_ERR.TLV_INVALID_SIZE, "a TLV runs past its area")
    claimed = tlvs.get(TLV_SHA256)
    if claimed is None:
        raise DfuError(IMG_MGMT_ERR.HASH_NOT_FOUND, "the image has no SHA256 TLV")
    if hashlib.sha256(data[:hashed]).digest() != claimed:
        raise DfuError(IMG_MGMT_ERR.INVALID_HASH, "the image's SHA-256 does not match its TLV")
    version = f"{major}.{minor}.{rev}" + (f".{build}" if build else "")
    return SlotImage(data, version, claimed)


def build_image(version: str, firmware: bytes, header_size: int = 0x200) -> bytes:
    """An unsigned image as a sensor leaves the factory with: header, firmware, and a TLV area
    with the SHA256 TLV (what ``imgtool sign`` writes without a key)."""
    major, minor, revision, build = ([int(part) for part in version.split(".")] + [0] * 4)[:4]
    header = HEADER.pack(
        IMAGE_MAGIC, 0, header_size, 0, len(firmware), 0, major, minor, revision, build
    )
    hashed = header.ljust(header_size, b"\x00") + firmware
    digest = hashlib.sha256(hashed).digest()
    tlv = TLV.pack(TLV_SHA256, len(digest)) + digest
    return hashed + TLV_INFO.pack(TLV_INFO_MAGIC, TLV_INFO.size + len(tlv)) + tlv


class Bootloader:
    """The two slots of one image, with MCUboot's swap semantics (module text)."""

    def __init__(self, running: SlotImage) -> None:
        self.primary = running
        self.secondary: SlotImage | None = None
        self.confirmed = True  # the primary image is confirmed (not under test)
        self.pending = False  # the secondary image boots at the next reset
        self.permanent = False  # … for good (not under test)
        self._upload = bytearray()
        self._upload_length = 0
        self._upload_sha: bytes | None = None
        # Whether the image the last upload() call completed matched its ``sha`` (None: that
        # call completed no image, or the upload had no ``sha``); set even when the completed
        # image then fails the device's own check.
        self.last_match: bool | None = None

    # -- upload --

    @property
    def upload_offset(self) -> int:
        return len(self._upload)

    def writes(self, off: int, length: int | None = None, sha: bytes | None = None) -> bool:
        """Whether :meth:`upload` would write a chunk at ``off`` (False: it would answer with the
        offset it expects, or continue the upload session ``sha`` identifies)."""
        if off == 0:
            return not self._continues(length, sha)
        return off == len(self._upload) and self._upload_length > 0

    def _continues(self, length: int | None, sha: bytes | None) -> bool:
        return (
            self._upload_length > 0
            and bool(sha)
            and sha == self._upload_sha
            and length == self._upload_length
        )

    def upload(
        self, off: int, data: bytes, length: int | None = None, sha: bytes | None = None
    ) -> int:
        """Take a chunk; returns the offset the device expects next (the length when done).

        ``sha`` (only read with ``off`` 0) identifies the upload session and is checked against
        the completed image (:attr:`last_match`); see the module text.
        """
        self.last_match = None
        if off == 0:
            if self.pending:
                raise DfuError(IMG_MGMT_ERR.IMAGE_ALREADY_PENDING, "an image is pending")
            if length is None or length <= 0:
                raise DfuError(IMG_MGMT_ERR.INVALID_LENGTH, "the first chunk needs the length")
            if length > SLOT_SIZE:
                raise DfuError(IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE, "larger than the slot")
            if len(data) >= 4 and struct.unpack_from("<I", data)[0] != IMAGE_MAGIC:
                raise DfuError(IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC, "no MCUboot magic")
            if sha is not None and len(sha) > SHA_SIZE:
                raise DfuError(IMG_MGMT_ERR.INVALID_HASH, "the sha is longer than a SHA-256")
            if self._continues(length, sha):
                return len(self._upload)  # the same session: continue where it stopped
            self.secondary = None
            self._upload = bytearray()
            self._upload_length = length
            self._upload_sha = sha or None
        elif off != len(self._upload) or not self._upload_length:
            return len(self._upload)  # not where the device is: tell the client where it is
        if off + len(data) > self._upload_length:
            raise DfuError(IMG_MGMT_ERR.INVALID_IMAGE_DATA_OVERRUN, "past the announced length")
        self._upload += data
        if len(self._upload) == self._upload_length:
            image, sha = bytes(self._upload), self._upload_sha
            self._forget_upload()
            if sha is not None:
                self.last_match = hashlib.sha256(image).digest() == sha
            self.secondary = read_image(image)  # a bad image leaves the slot empty
            return len(image)
        return len(self._upload)

    def _forget_upload(self) -> None:
        self._upload, self._upload_length, self._upload_sha = bytearray(), 0, None

    # -- state --

    def states(self) -> list[dict[str, Any]]:
        """The image list as Zephyr's ``image state`` read answers it."""
        under_test = not self.confirmed
        listed = [
            {
                "image": 0,
                "slot": 0,
                "version": self.primary.version,
                "hash": self.primary.hash,
                "bootable": True,
                "pending": False,
                "confirmed": self.confirmed,
                "active": True,
                "permanent": False,
            }
        ]
        if self.secondary is not None:
            listed.append(
                {
                    "image": 0,
                    "slot": 1,
                    "version": self.secondary.version,
                    "hash": self.secondary.hash,
                    "bootable": True,
                    "pending": self.pending or under_test,  # under test: reverts at next reset
                    "confirmed": False,
                    "active": False,
                    "permanent": self.pending and self.permanent,
                }
            )
        return listed

    def set_state(self, hash_: bytes | None, *, confirm: bool) -> None:
        if hash_ is None or hash_ == self.primary.hash:
            if not confirm:
                raise DfuError(
                    IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED,
                    "the running image cannot be set for test",
                )
            self.confirmed = True
            return
        if self.secondary is None or hash_ != self.secondary.hash:
            raise DfuError(IMG_MGMT_ERR.HASH_NOT_FOUND, "no image with that hash")
        if not self.confirmed:
            raise DfuError(
                IMG_MGMT_ERR.IMAGE_CONFIRMATION_DENIED, "confirm the running image first"
            )
        self.pending, self.permanent = True, confirm

    def erase(self) -> None:
        if self.pending or not self.confirmed:
            raise DfuError(IMG_MGMT_ERR.IMAGE_ALREADY_PENDING, "the secondary slot is in use")
        self.secondary = None
        self._forget_upload()

    def reset(self) -> str:
        """Boot: what MCUboot did (``"reverted"``, ``"test"``, ``"permanent"`` or ``"none"``).
        An upload in progress is forgotten (the application's RAM state)."""
        self._forget_upload()
        if not self.confirmed:  # the image under test was not confirmed: swap back
            assert self.secondary is not None
            self.primary, self.secondary = self.secondary, self.primary
            self.confirmed = True
            return "reverted"
        if self.pending and self.secondary is not None:
            self.primary, self.secondary = self.secondary, self.primary
            self.confirmed = self.permanent
            self.pending = self.permanent = False
            return "permanent" if self.confirmed else "test"
        return "none"
