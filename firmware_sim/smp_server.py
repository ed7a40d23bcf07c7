"""The simulated sensor's MCUmgr SMP server, as Zephyr's answers it: request frames in, response
frames out (the GATT characteristic around it carries them; :class:`Reassembler` joins a request
the client wrote in pieces).

A frame is the 8-byte SMP header (op, version, flags, length, group, sequence, command; network
byte order) and a CBOR map. Served (Zephyr's "SMP Groups" documentation):

- group 0, OS: echo, reset, MCUmgr parameters, and task statistics (:func:`task_statistics`);
- group 1, images: state read/write (test, confirm), upload with upload sessions (``sha``,
  ``match``; :mod:`.mcuboot`), erase;
- group 2, statistics: the list of groups and each group's counters — ``smp`` (this server's
  own, :class:`SmpCounters`) and whatever the device adds (:class:`DeviceStatus`, e.g. ``ble``).

A group error answers ``{"err": {"group", "rc"}}`` to an SMP v2 request and ``{"rc"}`` to a v1
one; an unknown command answers ``rc`` 8 (``MGMT_ERR.ENOTSUP``). The update-path faults
(:class:`~.faults.SmpFaults`) are applied to upload chunks here; a link drop they call for is
left to the transport (:meth:`SmpServer.take_drop`).
Header and codes: ``smp.header``, ``smp.error``, ``smp.image_management``,
``smp.statistics_management`` (the protocol's definitions); the handling is this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import cbor2
from smp.error import MGMT_ERR
from smp.header import OP, CommandId, GroupId, Header, Version
from smp.statistics_management import STAT_MGMT_ERR

from firmware_sim.faults import SmpFaults
from firmware_sim.mcuboot import Bootloader, DfuError

HEADER_SIZE: Final = Header.SIZE
# CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE / _COUNT: the largest request the device takes, and how many
BUFFER_SIZE: Final = 1024
BUFFER_COUNT: Final = 4
SMP_STATISTICS: Final = "smp"  # the statistics group of this server's own counters
# The system clock of the simulated nRF52 (its 32.768 kHz RTC): the unit of a task's "runtime",
# which Zephyr reports in execution cycles (CONFIG_SCHED_THREAD_USAGE).
CYCLES_PER_SECOND: Final = 32_768
# Zephyr's thread_state bits (kernel_structs.h): none for the idle thread (never in the ready
# queue), _THREAD_PENDING for a thread waiting on an object, _THREAD_QUEUED for one in the ready
# queue (such as the thread running the request).
THREAD_NO_STATE: Final = 0x00
THREAD_PENDING: Final = 0x02
THREAD_QUEUED: Final = 0x80
Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ZephyrThread:
    """One Zephyr thread as ``os taskstat`` reports it: priority (preemptible, so as an unsigned
    number), state bits, stack size and use in 4-byte words."""

    name: str
    prio: int
    state: int
    stack_words: int
    stack_used_words: int


# The firmware's threads (Zephyr's "idle" and "main", the Bluetooth RX work queue, and the MCUmgr
# SMP work queue that is running this very request), in the order Zephyr walks them.
THREADS: Final = (
    ZephyrThread("idle", 15, THREAD_NO_STATE, 80, 22),
    ZephyrThread("main", 0, THREAD_PENDING, 512, 186),
    ZephyrThread("bt_rx", 8, THREAD_PENDING, 550, 241),
    ZephyrThread("smp", 3, THREAD_QUEUED, 512, 307),
)
# Execution cycles one unit of work costs a thread (plausible magnitudes, not measured).
CYCLES_PER_REQUEST: Final = 180
CYCLES_PER_RADIO_EVENT: Final = 60
CYCLES_PER_MEASUREMENT: Final = 400


@dataclass(slots=True)
class SmpCounters:
    """The ``smp`` statistics group: this server's counters since boot (Zephyr's statistics are
    RAM state, zero after a reset)."""

    requests: int = 0
    responses: int = 0
    errors: int = 0  # responses carrying an error code
    bytes_in: int = 0  # request frames, headers included
    bytes_out: int = 0  # response frames, headers included
    upload_chunks: int = 0  # image upload chunks written


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What the device around the server contributes to its statistics: time since boot, the
    work its other threads did (measurements taken; Bluetooth events handled) and further
    statistics groups (name → counters)."""

    uptime_s: float = 0.0
    measurements: int = 0
    radio_events: int = 0
    groups: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def task_statistics(status: DeviceStatus, counters: SmpCounters) -> dict[str, dict[str, int]]:
    """The ``tasks`` map of Zephyr's ``os taskstat`` response (SMP group 0, command 2; the
    fields of ``os_mgmt_taskstat_encode_one``): per thread name ``prio``, ``tid`` (the order of
    the walk), ``state``, ``stksiz`` and ``stkuse`` (words), ``runtime`` (cycles), ``cswcnt``,
    ``last_checkin`` and ``next_checkin`` (0, as Zephyr sends them). Zephyr sends ``cswcnt`` 0
    too; the simulator counts plausible context switches instead (a thread wakes once per unit
    of work, the idle thread once after each), so that they grow as the device works."""
    work = {
        "main": (status.measurements, status.measurements * CYCLES_PER_MEASUREMENT),
        "bt_rx": (status.radio_events, status.radio_events * CYCLES_PER_RADIO_EVENT),
        "smp": (
            2 * counters.requests,
            counters.requests * CYCLES_PER_REQUEST + counters.bytes_in // 4,
        ),
    }
    busy = sum(cycles for _, cycles in work.values())
    total = round(max(0.0, status.uptime_s) * CYCLES_PER_SECOND)
    work["idle"] = (sum(switches for switches, _ in work.values()), max(0, total - busy))
    return {
        thread.name: {
            "prio": thread.prio,
            "tid": tid,
            "state": thread.state,
            "stksiz": thread.stack_words,
            "stkuse": thread.stack_used_words,
            "runtime": work[thread.name][1],
            "cswcnt": work[thread.name][0],
            "last_checkin": 0,
            "next_checkin": 0,
        }
        for tid, thread in enumerate(THREADS)
    }


class GroupError(Exception):
    """A group's error (SMP v2 ``err``), and the ``MGMT_ERR`` Zephyr translates it to for an
    SMP v1 request (the group's ``mg_translate_error``)."""

    def __init__(self, group: GroupId, code: int, v1_code: MGMT_ERR) -> None:
        super().__init__(f"group {group.name}: error {code}")
        self.group = group
        self.code = code
        self.v1_code = v1_code


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
    """One device's management: its bootloader, what a reset does (``on_reset`` runs once the
    response is on its way, as Zephyr resets after answering), what the device reports for the
    statistics (``device``) and the update-path faults to apply (:attr:`faults`, settable)."""

    def __init__(
        self,
        bootloader: Bootloader,
        on_reset: Callable[[], None] = lambda: None,
        *,
        device: Callable[[], DeviceStatus] = DeviceStatus,
        faults: SmpFaults | None = None,
    ) -> None:
        self.bootloader = bootloader
        self.on_reset = on_reset
        self.device = device
        self.faults = faults if faults is not None else SmpFaults()
        self.counters = SmpCounters()
        self.reset_requested = False
        self._drop_requested = False
        self._handlers: dict[tuple[int, int, OP], Handler] = {
            (GroupId.OS_MANAGEMENT, CommandId.OSManagement.ECHO, OP.WRITE): self._echo,
            (GroupId.OS_MANAGEMENT, CommandId.OSManagement.RESET, OP.WRITE): self._reset,
            (GroupId.OS_MANAGEMENT, CommandId.OSManagement.TASK_STATS, OP.READ): self._tasks,
            (
                GroupId.OS_MANAGEMENT,
                CommandId.OSManagement.MCUMGR_PARAMETERS,
                OP.READ,
            ): self._parameters,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.STATE, OP.READ): self._states,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.STATE, OP.WRITE): self._test,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.UPLOAD, OP.WRITE): self._upload,
            (GroupId.IMAGE_MANAGEMENT, CommandId.ImageManagement.ERASE, OP.WRITE): self._erase,
            (
                GroupId.STATISTICS_MANAGEMENT,
                CommandId.StatisticsManagement.GROUP_DATA,
                OP.READ,
            ): self._statistics,
            (
                GroupId.STATISTICS_MANAGEMENT,
                CommandId.StatisticsManagement.LIST_OF_GROUPS,
                OP.READ,
            ): self._statistics_groups,
        }

    def handle(self, frame: bytes) -> bytes:
        """The response frame to one request frame."""
        self.counters.requests += 1
        self.counters.bytes_in += len(frame)
        header = Header.loads(frame[:HEADER_SIZE])
        response_op = OP.READ_RSP if header.op == OP.READ else OP.WRITE_RSP
        v2 = header.version == Version.V2
        try:
            answer = self._dispatch(header, frame[HEADER_SIZE:])
        except SmpRequestError as exc:
            answer = {"rc": int(exc.code)}
        except DfuError as exc:
            answer = (
                {"err": {"group": int(GroupId.IMAGE_MANAGEMENT), "rc": int(exc.code)}}
                if v2
                else {"rc": int(exc.code)}
            )
        except GroupError as exc:
            answer = (
                {"err": {"group": int(exc.group), "rc": int(exc.code)}}
                if v2
                else {"rc": int(exc.v1_code)}
            )
        except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError):
            answer = {"rc": int(MGMT_ERR.EINVAL)}
        if "err" in answer or answer.get("rc", 0) != 0:
            self.counters.errors += 1
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
        framed = bytes(response) + payload
        self.counters.responses += 1
        self.counters.bytes_out += len(framed)
        return framed

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

    def take_drop(self) -> bool:
        """Whether the last request called for the link to drop before its response goes out
        (:attr:`faults`); asking clears it."""
        drop, self._drop_requested = self._drop_requested, False
        return drop

    def booted(self) -> None:
        """The device restarted: the statistics, RAM state, start from zero."""
        self.counters = SmpCounters()

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

    def _tasks(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"tasks": task_statistics(self.device(), self.counters)}

    def _states(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"images": self.bootloader.states(), "splitStatus": 0}

    def _test(self, body: dict[str, Any]) -> dict[str, Any]:
        hash_ = body.get("hash")
        if hash_ is not None and not isinstance(hash_, bytes):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        self.bootloader.set_state(hash_, confirm=bool(body.get("confirm", False)))
        return self._states(body)

    def _upload(self, body: dict[str, Any]) -> dict[str, Any]:
        off, data = body["off"], body["data"]
        length, sha = body.get("len"), body.get("sha")
        if not isinstance(off, int) or not isinstance(data, bytes) or off < 0:
            raise SmpRequestError(MGMT_ERR.EINVAL)
        if length is not None and not isinstance(length, int):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        if sha is not None and not isinstance(sha, bytes):
            raise SmpRequestError(MGMT_ERR.EINVAL)
        if off != 0:
            length = sha = None  # only the first request's are read
        written = self.bootloader.writes(off, length, sha)
        if written:
            data = self.faults.take_chunk(data)
            self.counters.upload_chunks += 1
        reached = self.bootloader.upload(off, data, length, sha)
        if written and self.faults.drop_after(reached):
            self._drop_requested = True
        answer: dict[str, Any] = {"off": reached}
        if self.bootloader.last_match is not None:
            answer["match"] = self.bootloader.last_match
        return answer

    def _erase(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.bootloader.erase()
        return {}

    def _statistics_groups(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"stat_list": [SMP_STATISTICS, *self.device().groups]}

    def _statistics(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["name"]
        if not isinstance(name, str) or not name:
            raise SmpRequestError(MGMT_ERR.EINVAL)
        groups = {SMP_STATISTICS: asdict(self.counters), **self.device().groups}
        fields = groups.get(name)
        if fields is None:
            raise GroupError(
                GroupId.STATISTICS_MANAGEMENT, STAT_MGMT_ERR.ERR_INVALID_GROUP, MGMT_ERR.ENOENT
            )
        return {"name": name, "fields": dict(fields)}
