"""bleak scanner backend over a :class:`~gateway.ble.bumble.adapter.BumbleAdapter`.

Use the class from ``adapter.backends.scanner`` (bound to that adapter) as
``BleakScanner(..., backend=...)``. Service UUID filters apply in both scanning modes (the
controller sees every advertisement; unwanted ones are dropped here, as bleak's
``is_allowed_uuid`` prescribes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bumble import core

from gateway.ble.bumble.advertising import parse_ad_structures

if TYPE_CHECKING:
    from bumble.device import Advertisement

    from gateway.ble.bumble.adapter import BumbleAdapter

logger = logging.getLogger(__name__)

# Keys of BLEDevice.details for devices found by this backend.
DETAILS_SOURCE: Final = "source"  # the adapter's description (bleak-retry-connector shows it)
# The peer address with its type, as Bumble writes it: "F0:..:F5" random, "F0:..:F5/P" public.
DETAILS_ADDRESS: Final = "bumble_address"
SCANNING_MODES: Final = ("active", "passive")


class BleakScannerBumble(BaseBleakScanner):
    """Scanner backend; instantiate through a class bound to an adapter (``adapter.backends``)."""

    _adapter: ClassVar[BumbleAdapter]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        adapter = getattr(type(self), "_adapter", None)
        if adapter is None:
            raise BleakError(
                "BleakScannerBumble must be bound to an adapter: pass "
                "BumbleAdapter(...).backends.scanner as BleakScanner's backend="
            )
        if scanning_mode not in SCANNING_MODES:
            raise BleakError(f"scanning_mode {scanning_mode!r}: expected 'active' or 'passive'")
        self._bumble: BumbleAdapter = adapter
        self._active = scanning_mode == "active"
        self._remove: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        await self.stop()
        self.seen_devices = {}
        try:
            self._remove = await self._bumble.add_scan_listener(
                self._on_advertisement, active=self._active
            )
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self._bumble.description}: cannot start scanning: {exc}") from exc

    async def stop(self) -> None:
        remove, self._remove = self._remove, None
        if remove is None:
            return
        try:
            await remove()
        except core.BaseBumbleError as exc:
            raise BleakError(f"{self._bumble.description}: cannot stop scanning: {exc}") from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        fields = parse_ad_structures(advertisement.data.ad_structures)
        if fields.malformed:
            self._bumble.malformed_advertisements += fields.malformed
            logger.debug(
                "%s: %d malformed AD structure(s) from %s",
                self._bumble.description,
                fields.malformed,
                advertisement.address,
            )
        data = fields.to_bleak(advertisement.rssi, (advertisement,))
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = advertisement.address.to_string(with_type_qualifier=True)
        name = data.local_name
        if name is None and (known := self.seen_devices.get(key)) is not None:
            name = known[0].name  # scan responses carry the name; plain reports may not
        device = self.create_or_update_device(
            key,
            advertisement.address.to_string(with_type_qualifier=False),
            name,
            {DETAILS_SOURCE: self._bumble.description, DETAILS_ADDRESS: key},
            data,
        )
        self.call_detection_callbacks(device, data)
