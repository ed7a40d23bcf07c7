"""MCUboot test images built with MCUboot's own ``imgtool`` (its Python API, the same code as its
command line): a firmware payload of a few KiB, signed with a key made for the session or
unsigned (the SHA256 TLV only), with or without protected TLVs (a security counter)."""

from __future__ import annotations

import os
from pathlib import Path

from imgtool import image as imgtool_image
from imgtool import keys as imgtool_keys
from imgtool import version as imgtool_version

HEADER_SIZE = 0x200
SLOT_SIZE = 0x40000


def build_image(
    directory: Path,
    version: str,
    *,
    firmware: bytes | None = None,
    key: str | None = None,  # "ed25519" | "ecdsa-p256" | None
    security_counter: int | None = None,
) -> Path:
    """An MCUboot image file of ``firmware`` (random bytes by default) at ``version``."""
    payload = firmware if firmware is not None else os.urandom(4096)
    raw = directory / f"firmware-{version}.bin"
    raw.write_bytes(payload)
    image = imgtool_image.Image(
        version=imgtool_version.decode_version(version),
        header_size=HEADER_SIZE,
        pad_header=True,
        slot_size=SLOT_SIZE,
        align=4,
        security_counter=security_counter,
    )
    image.load(str(raw))
    signer = None
    if key == "ed25519":
        signer = imgtool_keys.Ed25519.generate()
    elif key == "ecdsa-p256":
        signer = imgtool_keys.ECDSA256P1.generate()
    image.create(signer, "hash", None)
    out = directory / f"image-{version}-{key or 'unsigned'}-{security_counter}.bin"
    image.save(str(out))
    return out
