"""MCUmgr's SMP service on a simulated sensor, as Zephyr's Bluetooth SMP transport presents it:
one characteristic (write without response, notify) in service
``8D53DC1D-1DB7-4CD3-868B-8A527460AA84``. Requests arrive in ATT writes (joined by
:class:`~.smp_server.Reassembler`); each response goes back in notifications of at most
ATT_MTU - 3 bytes. A reset request restarts the sensor after its response: the link drops, the
bootloader swaps or reverts (:mod:`.mcuboot`), and the sensor advertises again shortly after,
running — and reporting in DIS Firmware Revision — whatever image MCUboot booted.

The update path can be made to fail (:attr:`Management.faults`, from the scenario's
``[faults]`` ``smp_*`` settings or set by a test): the link drops mid-upload, or a chunk arrives
corrupted (:class:`~.faults.SmpFaults`). An image whose firmware carries
:data:`~.mcuboot.CRASH_MARKER` boots and answers SMP, but "crashes" its application: while it
runs, every measurement packet the sensor sends is malformed and no waveform streams
(:attr:`Management.crashing`), until MCUboot reverts it at the next reset without confirmation.
The statistics the SMP server reports (OS task statistics, the ``smp`` and ``ble`` statistics
groups) count from the sensor's last boot.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

from bumble import gatt
from bumble.core import UUID
from bumble.device import Connection

from firmware_sim.faults import Corruption, SmpFaults
from firmware_sim.mcuboot import Bootloader, build_image, read_image
from firmware_sim.smp_server import DeviceStatus, Reassembler, SmpServer

if TYPE_CHECKING:
    from firmware_sim.sensor import Sensor

SMP_SERVICE: Final = "8D53DC1D-1DB7-4CD3-868B-8A527460AA84"
SMP_CHARACTERISTIC: Final = "DA2E7828-FBCE-4E01-AE9E-261174997C48"
ATT_HEADER: Final = 3
REBOOT_S: Final = 0.5  # from reset to advertising again
FACTORY_FIRMWARE_SIZE: Final = 16 * 1024
BLE_STATISTICS: Final = "ble"  # the statistics group of the sensor's Bluetooth counters
# The SensorStats counters the "ble" statistics group reports (since boot), by field name.
BLE_COUNTERS: Final = (
    "connections",
    "disconnects",
    "remote_disconnects",
    "notifications",
    "indications",
)


def factory_image(model: str, version: str) -> bytes:
    """The image a sensor of ``model`` leaves the factory with (deterministic firmware bytes)."""
    seed = hashlib.sha256(f"{model} {version}".encode()).digest()
    firmware = (seed * (FACTORY_FIRMWARE_SIZE // len(seed) + 1))[:FACTORY_FIRMWARE_SIZE]
    return build_image(version, firmware)


class Management:
    """The SMP service of one sensor."""

    def __init__(self, sensor: Sensor, version: str) -> None:
        self._sensor = sensor
        self.bootloader = Bootloader(read_image(factory_image(sensor.MODEL, version)))
        self.server = SmpServer(
            self.bootloader,
            self._reset_soon,
            device=self._status,
            faults=SmpFaults.from_settings(sensor.scenario.faults),
        )
        self._booted_at = sensor.sim_time()
        self._at_boot = self._counts()
        self._reassembler = Reassembler()
        self.characteristic = sensor.characteristic(
            SMP_CHARACTERISTIC,
            gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE
            | gatt.Characteristic.Properties.NOTIFY,
            write=self._on_write,
        )
        self.service = gatt.Service(UUID(SMP_SERVICE), [self.characteristic])
        self.resets = 0

    @property
    def version(self) -> str:
        """The running image's version."""
        return self.bootloader.primary.version

    @property
    def crashing(self) -> bool:
        """Whether the running image "crashes" (its firmware carries the crash marker): the
        sensor then sends every measurement packet malformed (truncated) and no GHS waveform."""
        return self.bootloader.primary.crashes

    def corruption(self, planned: Corruption) -> Corruption:
        """The corruption of the next measurement packet: ``planned`` (the scenario's packet
        faults), or TRUNCATED while the running image crashes."""
        return Corruption.TRUNCATED if self.crashing else planned

    @property
    def faults(self) -> SmpFaults:
        """The update-path faults in force (a new instance arms each fault once again)."""
        return self.server.faults

    @faults.setter
    def faults(self, faults: SmpFaults) -> None:
        self.server.faults = faults

    def on_disconnected(self) -> None:
        self._reassembler.clear()

    def _on_write(self, _connection: Connection, value: bytes) -> None:
        for frame in self._reassembler.feed(value):
            response = self.server.handle(frame)
            if self.server.take_drop():  # a fault: the link goes before the response
                self._reassembler.clear()
                self._sensor.spawn(self._sensor.disconnect(), "smp fault: link drop")
                return
            self._sensor.spawn(self._respond(response), "smp response")

    async def _respond(self, response: bytes) -> None:
        size = max(1, self._sensor.att_mtu - ATT_HEADER)
        for at in range(0, len(response), size):
            await self._sensor.notify(self.characteristic, response[at : at + size])
        self.server.after_response()

    def _reset_soon(self) -> None:
        self._sensor.spawn(self._reboot(), "smp reset")

    async def _reboot(self) -> None:
        """Let MCUboot boot (swap, revert or nothing), drop the link, advertise again."""
        await self._sensor.restart(REBOOT_S, self._boot)
        self._at_boot = self._counts()  # the link the reset dropped was the old boot's
        self.resets += 1

    def _boot(self) -> str:
        outcome = self.bootloader.reset()
        self.server.booted()
        self._booted_at = self._sensor.sim_time()
        return outcome

    def _counts(self) -> dict[str, int]:
        stats = self._sensor.stats
        return {name: int(getattr(stats, name)) for name in (*BLE_COUNTERS, "measurements")}

    def _status(self) -> DeviceStatus:
        """What the sensor reports to the SMP server's statistics, counted since boot."""
        since_boot = {name: n - self._at_boot[name] for name, n in self._counts().items()}
        ble = {name: since_boot[name] for name in BLE_COUNTERS}
        return DeviceStatus(
            uptime_s=self._sensor.sim_time() - self._booted_at,
            measurements=since_boot["measurements"],
            radio_events=sum(ble.values()),
            groups={BLE_STATISTICS: ble},
        )
