"""The simulated sensor's MCUmgr SMP server, as Zephyr's answers it: request frames in, response
frames out (the GATT characteristic around it carries them; :class:`Reassembler` joins a request
the client wrote in pieces).

A frame is the 8-byte SMP header (op, version, flags, length, group, sequence, command; network
byte order) and a CBOR map. Served: OS echo, reset and MCUmgr parameters; image state read/write
(test, confirm), upload, erase (:mod:`.mcuboot`). A group error answers
``{"err": {"group", "rc"}}`` to an SMP v2 request and ``{"rc"}`` to a v1 one; an unknown command
answers ``rc`` 8 (``MGMT_ERR.ENOTSUP``).
Header and codes: ``smp.header``, ``smp.error``, ``smp.image_management`` (the protocol's
definitions); the handling is this module's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import cbor2
from smp.error import MGMT_ERR
from smp.header import OP, CommandId, GroupId, Header, Version

from firmware_sim.mcuboot import Bootloader, DfuError

HEADER_SIZE: Final = Header.SIZE
# CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE / _COUNT: the largest request the device takes, and how many
BUFFER_SIZE: Final = 1024
BUFFER_COUNT: Final = 4
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class SmpRequestError(Exception):
    """A general SMP error (``MGMT_ERR``) for the request."""

    def __init__(self, code: MGMT_ERR) -> None:
        super().__init__(code.name)
        self.code = code


class Reassembler:
    """Joins the pieces of request frames written one ATT write at a time."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data``."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER_SIZE:
            length = int.from_bytes(self._buffer[2:4], "big")
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
        return frames

    def clear(self) -> None:
        self._buffer.clear()


class SmpServer:
    """One device's management: its bootloader, and what a reset does (``on_reset`` runs once the
    response is on its way, as Zephyr resets after answering)."""

    def __init__(
        self,
        bootloader: Bootloader,
        on_reset: Callable[[], None] = lambda: None,
    ) -> None:
        self.bootloader = bootloader
        self.on_reset = on_reset
        self.reset_requested = False
        self._handlers: dict[tuple[int, int, OP], Handler] = {
            (GroupId.OS_MANAGEMENT, CommandId.OSManagement.ECHO, OP.WRITE): self._echo,
            (GroupId.OS_MANAGEMENT, CommandId.OSManagement.RESET, OP.WRITE): self._reset,
            (
                GroupId.OS_MANAGEMENT,
                CommandId.OSManagement.MCUMGR_PARAMETERS,
                OP.READ,
            ): self._parameters,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.STATE, OP.READ): self._states,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.STATE, OP.WRITE): self._test,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.UPLOAD, OP.WRITE): self._upload,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.ERASE, OP.WRITE): self._erase,
        }

    def handle(self, frame: bytes) -> bytes:
        """The response frame to one request frame."""
        header = Header.loads(frame[:HEADER_SIZE])
        response_op = OP.READ_RSP if header.op == OP.READ else OP.WRITE_RSP
        try:
            answer = self._dispatch(header, frame[HEADER_SIZE:])
        except SmpRequestError as exc:
            answer = {"rc": int(exc.code)}
        except DfuError as exc:
            answer = (
                {"err": {"group": int(GroupId.IMAGE_MANAGEMENT), "rc": int(exc.code)}}
                if header.version == Version.V2
                else {"rc": int(exc.code)}
            )
        except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError):
            answer = {"rc": int(MGMT_ERR.EINVAL)}
        payload = cbor2.dumps(answer, canonical=True)
        response = Header(
            op=response_op,
            version=header.version,
            flags=header.flags,
            length=len(payload),
            group_id=header.group_id,
            sequence=header.sequence,
            command_id=header.command_id,
        )
        return bytes(response) + payload

    def _dispatch(self, header: Header, payload: bytes) -> dict[str, Any]:
        body = cbor2.loads(payload) if payload else {}
        if not isinstance(body, dict):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        handler = self._handlers.get((int(header.group_id), int(header.command_id), header.op))
        if handler is None:
            raise SmpRequestError(MGMT_ERR.ENOTSUP)
        return handler(body)

    def after_response(self) -> None:
        """Call once the response is sent: a requested reset happens now."""
        if self.reset_requested:
            self.reset_requested = False
            self.on_reset()

    # -- handlers --

    def _echo(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body["d"]
        if not isinstance(text, str):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        return {"r": text}

    def _parameters(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"buf_size": BUFFER_SIZE, "buf_count": BUFFER_COUNT}

    def _reset(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.reset_requested = True
        return {}

    def _states(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"images": self.bootloader.states(), "splitStatus": 0}

    def _test(self, body: dict[str, Any]) -> dict[str, Any]:
        hash_ = body.get("hash")
        if hash_ is not None and not isinstance(hash_, bytes):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        self.bootloader.set_state(hash_, confirm=bool(body.get("confirm", False)))
        return self._states(body)

    def _upload(self, body: dict[str, Any]) -> dict[str, Any]:
        off, data, length = body["off"], body["data"], body.get("len")
        if not isinstance(off, int) or not isinstance(data, bytes) or off < 0:
            raise SmpRequestError(MGMT_ERR.EINVAL)
        if length is not None and not isinstance(length, int):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        return {"off": self.bootloader.upload(off, data, length)}

    def _erase(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.bootloader.erase()
        return {}
