"""The virtual radio: sensors on one Bumble ``LocalLink`` and the ways a host attaches to it.

Topology: each sensor is a ``bumble.device.Device`` on its own ``bumble.controller.Controller``
attached to the link, with a random static address and its own name. A host (the gateway) attaches
through one more controller on the same link: ``await sim.attach_host()`` returns an in-memory HCI
transport (``.source``/``.sink``) for a Bumble ``Host``/``Device`` in the same process;
``sim.attach_host_transport(transport)`` serves an opened Bumble transport instead (the CLI's
``tcp-server:…``). A sensor may also run on a real controller (``controllers={"bp": transport}``):
then it advertises over the air and its virtual twin is not created.

Several sensors of one kind: list the kind as often as wanted (``["bp", "bp", "ecg"]``, or
``parse_devices("bp:2,ecg")``, the CLI's ``--devices`` syntax). ``sim.sensors`` keys the first
sensor of a kind by the kind (``"bp"``) and the further ones ``"bp-2"``, ``"bp-3"``, … in list order
(:func:`sensor_keys`); ``controllers`` uses the same keys. Every sensor gets its own controller, a
distinct deterministic address (:func:`sensor_addresses`; the first of a kind keeps
``sensor_address(seed, kind)``), and from it a distinct name within its kind ("Bedside BP 1C83"),
System ID and serial number.

Usage::

    async with Simulator(["ecg", "spo2", "bp", "thermo"], scenario="normal", seed=1) as sim:
        hci = await sim.attach_host()
        central = Device.with_hci("gateway", Address("F0:00:00:00:00:01"), hci.source, hci.sink)
        await central.power_on()
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, Transport
from bumble.utils import AsyncRunner

from firmware_sim import scenarios
from firmware_sim.context import SensorContext
from firmware_sim.devices import KINDS
from firmware_sim.scenarios import Scenario, Timeline
from firmware_sim.sensor import NAME_SUFFIX_DIGITS, Sensor

logger = logging.getLogger(__name__)

DEFAULT_KINDS: Final = ("ecg", "spo2", "bp", "thermo")
BUMBLE_DRAIN_TIMEOUT_S: Final = 2.0
STATIC_ADDRESS_MARK: Final = 0xC0  # random static: the two most significant bits are 1
MAX_SENSORS: Final = 100  # one virtual radio; far beyond what a bedside gateway connects to
INSTANCE_SEPARATOR: Final = "-"  # "bp-2": the second blood-pressure cuff
COUNT_SEPARATOR: Final = ":"  # "bp:5" in a device list: five cuffs


def sensor_address(seed: int, key: str) -> str:
    """A deterministic random static address (Core Vol 6 Part B §1.3.2.1) for the sensor ``key``
    (a kind such as ``"bp"`` for the first sensor of that kind, ``"bp-2"`` for the second)."""
    rng = random.Random(f"{seed}:address:{key}")  # noqa: S311 - an address, not a secret
    octets = bytearray(rng.randbytes(6))
    octets[0] |= STATIC_ADDRESS_MARK
    return ":".join(f"{b:02X}" for b in octets)


def sensor_keys(kinds: Sequence[str]) -> list[str]:
    """The ``sim.sensors`` key of each entry: the kind for its first occurrence, then
    ``kind-2``, ``kind-3``, … (``["bp", "ecg", "bp"]`` → ``["bp", "ecg", "bp-2"]``)."""
    seen: dict[str, int] = {}
    keys = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        keys.append(kind if seen[kind] == 1 else f"{kind}{INSTANCE_SEPARATOR}{seen[kind]}")
    return keys


def sensor_addresses(seed: int, kinds: Sequence[str]) -> dict[str, str]:
    """Key → address for the sensors of ``kinds`` (keys as :func:`sensor_keys`).

    Every address is distinct, and within a kind so are the last four hex digits that end the
    sensor's name. The first sensor of each kind gets ``sensor_address(seed, kind)`` (a clash
    among those would need two equal 46-bit random numbers); a later one whose address clashes is
    derived again from ``"<key>#<attempt>"``.
    """
    keys = sensor_keys(kinds)
    firsts = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if key == kind]
    others = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if key != kind]
    used: set[str] = set()
    suffixes: set[tuple[str, str]] = set()
    chosen: dict[str, str] = {}
    for key, kind in firsts + others:
        address = sensor_address(seed, key)
        attempt = 0
        while address in used or (kind, _name_suffix(address)) in suffixes:
            attempt += 1
            address = sensor_address(seed, f"{key}#{attempt}")
        used.add(address)
        suffixes.add((kind, _name_suffix(address)))
        chosen[key] = address
    return {key: chosen[key] for key in keys}


def _name_suffix(address: str) -> str:
    return address.replace(":", "")[-NAME_SUFFIX_DIGITS:]


def parse_devices(text: str) -> list[str]:
    """A device list as ``--devices`` takes it: comma-separated kinds, each optionally with a
    count (``"ecg:5,spo2:5,bp,thermo"``); returns the kinds, repeated (``["ecg", "ecg", …]``).

    Raises ValueError naming the bad entry.
    """
    kinds: list[str] = []
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]  # "ecg," is fine
    if not entries:
        raise ValueError(f"device list {text!r}: no sensor kinds given")
    for entry in entries:
        kind, sep, count_text = (part.strip() for part in entry.partition(COUNT_SEPARATOR))
        if not kind:
            raise ValueError(f"device {entry!r}: no sensor kind before {COUNT_SEPARATOR!r}")
        count = 1
        if sep:
            if not (count_text.isdigit() and 1 <= int(count_text) <= MAX_SENSORS):
                raise ValueError(
                    f"device {entry!r}: the count after {COUNT_SEPARATOR!r} must be a whole "
                    f"number from 1 to {MAX_SENSORS}, e.g. {kind}{COUNT_SEPARATOR}5"
                )
            count = int(count_text)
        kinds.extend([kind] * count)
    check_kinds(kinds)
    return kinds


def check_kinds(kinds: Sequence[str]) -> None:
    """Raise ValueError for an empty list, an unknown kind or more than MAX_SENSORS sensors."""
    if not kinds:
        raise ValueError(f"no sensor kinds given; expected some of {', '.join(KINDS)}")
    unknown = sorted({k for k in kinds if k not in KINDS}, key=list(kinds).index)
    if unknown:
        raise ValueError(
            f"unknown sensor kind(s) {', '.join(unknown)}; expected some of {', '.join(KINDS)}"
        )
    if len(kinds) > MAX_SENSORS:
        raise ValueError(f"{len(kinds)} sensors: at most {MAX_SENSORS} on one virtual radio")


class HostController(Controller):
    """The controller a host attaches to. Like a real controller it drops every link on HCI
    Reset, so a gateway that restarts (or reconnects over TCP) finds the sensors advertising."""

    def drop_all_links(self) -> None:
        for connection in list(self.le_connections.values()):
            with contextlib.suppress(Exception):
                self.link.send_ll_control_pdu(
                    sender_address=connection.self_address,
                    receiver_address=connection.peer_address,
                    packet=ll.TerminateInd(
                        error_code=hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR
                    ),
                )
        self.le_connections.clear()
        self.le_scan_enable = False
        self.pending_le_connection = None

    def on_hci_reset_command(
        self, command: hci.HCI_Reset_Command
    ) -> hci.HCI_StatusReturnParameters:
        self.drop_all_links()
        return super().on_hci_reset_command(command)

    def on_hci_le_create_connection_cancel_command(
        self, _command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        """Core Spec Vol 4 Part E §7.8.13, which Bumble's emulated controller leaves out: with a
        connection attempt pending, end it with an LE Connection Complete event carrying Unknown
        Connection Identifier (after the Command Complete); with none pending, Command
        Disallowed. Without this a gateway's connect timeout leaves the initiator busy."""
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class HostTransport(Transport):
    """An in-memory HCI transport to a host-facing controller on the simulator's link; build a
    Bumble ``Host``/``Device`` on ``.source``/``.sink``. ``close()`` detaches the controller."""

    def __init__(self, controller: HostController, link: LocalLink) -> None:
        super().__init__(controller, AsyncPipeSink(controller))
        self.controller = controller
        self._link = link

    async def close(self) -> None:
        controller = self.controller
        controller.drop_all_links()
        if controller in self._link.controllers:
            self._link.remove_controller(controller)
        controller.set_packet_sink(None)
        if not controller.terminated.done():
            controller.terminated.set_result(None)


class Simulator:
    """A set of simulated sensors on one virtual radio; an async context manager."""

    def __init__(
        self,
        kinds: Sequence[str] = DEFAULT_KINDS,
        scenario: str | Path | Scenario = "normal",
        seed: int = 0,
        overrides: Mapping[str, object] | None = None,
        controllers: Mapping[str, Transport] | None = None,
        bonds_dir: Path | None = None,
    ) -> None:
        """``bonds_dir``: where the sensors keep their bonds across runs, as in flash (one JSON
        file per sensor); None: in memory, for the simulator's life."""
        check_kinds(kinds)
        self.bonds_dir = bonds_dir
        keys = sensor_keys(kinds)
        stray = sorted(set(controllers or {}) - set(keys))
        if stray:
            raise ValueError(
                f"controllers given for sensors not simulated: {', '.join(stray)} "
                f"(sensors: {', '.join(keys)})"
            )
        if isinstance(scenario, Scenario):
            data = scenario.model_dump()
            for key, value in (overrides or {}).items():
                scenarios.set_dotted(data, key, value, scenario.name)
            self.scenario = scenarios.validate(data, scenario.name)
        else:
            self.scenario = scenarios.load(scenario, overrides)
        self.kinds = tuple(kinds)
        self.keys = tuple(keys)
        self.seed = seed
        self.sensors: dict[str, Sensor] = {}
        """Key (``"bp"``, ``"bp-2"``, …; see :func:`sensor_keys`) → sensor, in ``kinds`` order."""
        self.link = LocalLink()  # type: ignore[no-untyped-call]  # Bumble leaves it unannotated
        self._controllers = dict(controllers or {})
        self._hosts: list[HostTransport] = []
        self._host_controllers: list[HostController] = []
        self._started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("simulator already started")
        self._started = True
        loop = asyncio.get_running_loop()
        timeline = Timeline(self.scenario)
        start_time = loop.time()
        addresses = sensor_addresses(self.seed, self.kinds)
        if self.bonds_dir is not None:  # secret keys: the owner's only
            self.bonds_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for index, (key, kind) in enumerate(zip(self.keys, self.kinds, strict=True)):
            context = SensorContext(
                index=index,
                seed=self.seed,
                scenario=self.scenario,
                timeline=timeline,
                address=addresses[key],
                start_time=start_time,
                bonds_file=(
                    None
                    if self.bonds_dir is None
                    else self.bonds_dir / f"{addresses[key].replace(':', '')}.json"
                ),
            )
            transport = self._controllers.get(key)
            if transport is not None:
                self.sensors[key] = KINDS[kind](context, transport.source, transport.sink)
            else:
                controller = Controller(f"{key} controller", link=self.link)
                self.sensors[key] = KINDS[kind](context, controller, AsyncPipeSink(controller))
        try:
            await asyncio.gather(*(sensor.start() for sensor in self.sensors.values()))
        except BaseException:
            await self.stop()
            raise

    async def attach_host(self) -> HostTransport:
        """A new host-facing controller on the link, as an in-memory HCI transport."""
        controller = HostController("host controller", link=self.link)
        transport = HostTransport(controller, self.link)
        self._hosts.append(transport)
        return transport

    def attach_host_transport(self, transport: Transport) -> HostController:
        """Serve an opened Bumble transport (e.g. ``tcp-server:…``) as a host-facing controller."""
        controller = HostController(
            "host controller",
            host_source=transport.source,
            host_sink=transport.sink,
            link=self.link,
        )
        self._host_controllers.append(controller)
        return controller

    async def stop(self) -> None:
        """Stop every sensor and detach the hosts; re-raises the first sensor failure."""
        results = await asyncio.gather(
            *(sensor.stop() for sensor in self.sensors.values()), return_exceptions=True
        )
        for host in self._hosts:
            await host.close()
        self._hosts.clear()
        for controller in self._host_controllers:
            controller.drop_all_links()
            if controller in self.link.controllers:
                self.link.remove_controller(controller)
        self._host_controllers.clear()
        for remaining in list(self.link.controllers):
            self.link.remove_controller(remaining)
        await _drain_bumble_tasks()
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _drain_bumble_tasks() -> None:
    """Let the tasks Bumble spawned (ATT handlers, advertising restarts) finish."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    pending = [
        t
        for t in list(AsyncRunner.running_tasks)
        if isinstance(t, asyncio.Task) and t.get_loop() is loop and t is not current
    ]
    if pending:
        await asyncio.wait(pending, timeout=BUMBLE_DRAIN_TIMEOUT_S)
