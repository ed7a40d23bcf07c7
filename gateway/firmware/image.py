"""MCUboot images as the gateway checks them before an upload (pure: bytes in, facts out).

An image is a 32-byte header (magic ``0x96f3b83d``, load address, header size, protected-TLV size,
image size, flags, version ``major.minor.revision+build``), the firmware from ``hdr_size`` on,
then the TLV area: the protected TLVs (magic ``0x6908``) if the header counts any, then the
unprotected ones (magic ``0x6907``). The ``SHA256`` TLV is the hash of everything before the
unprotected TLVs (header, firmware, protected TLVs) — the value MCUmgr's image list reports as the
slot's ``hash``; a signature TLV signs that hash (MCUboot ``docs/design.md``, "Image format").

The structures are read with ``smpclient.mcuboot`` (the SMP client library's own definitions);
this module adds what an upload needs: a whole-image check (sizes, the hash recomputed), the
signature kind, and MCUboot's version order.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Final

from smpclient.mcuboot import (
    IMAGE_TLV,
    IMAGE_TLV_INFO_MAGIC,
    IMAGE_TLV_PROT_INFO_MAGIC,
    ImageHeader,
    ImageInfo,
    ImageTLVInfo,
    ImageTLVValue,
    ImageVersion,
    MCUBootImageError,
)

from gateway.errors import BedsideError

HEADER_SIZE: Final = 32
TLV_INFO_SIZE: Final = 4
SHA256_SIZE: Final = 32
SIGNATURES: Final = {
    IMAGE_TLV.RSA2048_PSS: "RSA-2048 PSS",
    IMAGE_TLV.ECDSA224: "ECDSA P-224",
    IMAGE_TLV.ECDSA_SIG: "ECDSA P-256/P-384",
    IMAGE_TLV.RSA3072_PSS: "RSA-3072 PSS",
    IMAGE_TLV.ED25519: "Ed25519",
}


class ImageError(BedsideError, ValueError):
    """A file that is not a whole, intact MCUboot image (the message says what is wrong)."""


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """An MCUboot image version, ordered as MCUboot orders them (major, minor, revision, then
    the build number)."""

    major: int
    minor: int
    revision: int
    build: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        """``1.2.3`` or ``1.2.3+4`` (imgtool's form), ``1.2.3.4`` (Zephyr's image list),
        ``1.2.3-build4`` (smpclient's)."""
        core, _, build = text.strip().replace("-build", "+").partition("+")
        parts = core.split(".")
        if len(parts) == 4 and not build:  # Zephyr lists MAJOR.MINOR.REVISION.BUILD
            *parts, build = parts
        try:
            numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
            version = cls(numbers[0], numbers[1], numbers[2], int(build) if build else 0)
        except (IndexError, ValueError):
            version = None
        if version is None or len(parts) > 3 or min(version.as_tuple()) < 0:
            raise ImageError(f"version {text!r}: expected MAJOR.MINOR.REVISION[+BUILD]")
        return version

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.major, self.minor, self.revision, self.build)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.revision}"
        return f"{text}+{self.build}" if self.build else text


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """What an image file says of itself, checked."""

    version: Version
    sha256: bytes  # the SHA256 TLV, equal to the hash recomputed over the image
    size: int  # the whole file
    firmware_size: int  # the header's img_size
    signature: str | None  # the signature kind, None for an unsigned image
    load_address: int
    flags: int

    @property
    def hash_hex(self) -> str:
        return self.sha256.hex()


def _version(raw: ImageVersion) -> Version:
    return Version(raw.major, raw.minor, raw.revision, raw.build_num)


def _tlvs(data: bytes, at: int, *, protected: bool) -> tuple[list[ImageTLVValue], int]:
    """The TLVs of the area starting at ``at`` and where it ends."""
    what = "protected" if protected else "unprotected"
    if len(data) < at + TLV_INFO_SIZE:
        raise ImageError(f"the image ends before its {what} TLV area (at byte {at})")
    try:
        raw = data[at : at + TLV_INFO_SIZE]
        info: ImageTLVInfo[Any] = (
            ImageTLVInfo.loads(raw, IMAGE_TLV_PROT_INFO_MAGIC)
            if protected
            else ImageTLVInfo.loads(raw, IMAGE_TLV_INFO_MAGIC)
        )
    except (MCUBootImageError, struct.error) as exc:
        raise ImageError(f"the {what} TLV area at byte {at} is not one: {exc}") from exc
    end = at + info.tlv_tot
    if end > len(data):
        raise ImageError(
            f"the {what} TLV area claims {info.tlv_tot} bytes but the file ends {end - len(data)} "
            "bytes early: the image is truncated"
        )
    try:
        return ImageInfo.parse_tlvs(data[at + TLV_INFO_SIZE : end]), end
    except (MCUBootImageError, struct.error) as exc:
        raise ImageError(f"the {what} TLVs are malformed: {exc}") from exc


def inspect_image(data: bytes) -> FirmwareImage:
    """The checked facts of an MCUboot image; :class:`ImageError` names the first problem."""
    if len(data) < HEADER_SIZE:
        raise ImageError(f"{len(data)} bytes is too short for an MCUboot image header (32 bytes)")
    try:
        header = ImageHeader.loads(data[:HEADER_SIZE])
    except (MCUBootImageError, struct.error) as exc:
        raise ImageError(f"not an MCUboot image: {exc}") from exc
    if header.hdr_size < HEADER_SIZE:
        raise ImageError(f"the header says it is {header.hdr_size} bytes, less than 32")
    body_end = header.hdr_size + header.img_size
    if len(data) < body_end:
        raise ImageError(
            f"the header announces {header.img_size} bytes of firmware but the file ends "
            f"{body_end - len(data)} bytes early: the image is truncated"
        )
    protected: list[ImageTLVValue] = []
    hashed_end = body_end
    if header.protect_tlv_size:
        protected, hashed_end = _tlvs(data, body_end, protected=True)
        if hashed_end - body_end != header.protect_tlv_size:
            raise ImageError(
                "the protected TLV area's size does not match the header's "
                f"({hashed_end - body_end} vs {header.protect_tlv_size})"
            )
    tlvs, end = _tlvs(data, hashed_end, protected=False)
    by_type = {int(t.header.type): t.value for t in (*protected, *tlvs)}
    claimed = by_type.get(IMAGE_TLV.SHA256)
    if claimed is None:
        raise ImageError("the image has no SHA256 TLV: sign it with imgtool (it adds one)")
    if len(claimed) != SHA256_SIZE:
        raise ImageError(f"the SHA256 TLV is {len(claimed)} bytes, not 32")
    actual = hashlib.sha256(data[:hashed_end]).digest()
    if actual != claimed:
        raise ImageError(
            f"the image's SHA-256 ({actual.hex()[:16]}…) does not match its SHA256 TLV "
            f"({claimed.hex()[:16]}…): the file is corrupted"
        )
    signature = next((name for kind, name in SIGNATURES.items() if kind in by_type), None)
    return FirmwareImage(
        version=_version(header.ver),
        sha256=claimed,
        size=end,
        firmware_size=header.img_size,
        signature=signature,
        load_address=header.load_addr,
        flags=int(header.flags),
    )


def upload_refusal(image: FirmwareImage, running: Version, *, force: bool) -> str | None:
    """Why ``image`` should not replace firmware ``running`` (None: go ahead): not newer, unless
    forced."""
    if force or image.version > running:
        return None
    same = "the same as" if image.version == running else "older than"
    return (
        f"image version {image.version} is {same} the running {running}; "
        "give --force to install it anyway"
    )
