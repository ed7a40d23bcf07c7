"""Device resources for the sensor (PhdDevice) and the gateway (PhgDevice), per the HL7 PHD IG.

The sensor's Device comes from what the gateway read over Device Information (0x180A): System ID
(EUI-64), manufacturer, model, serial, revisions; its Bluetooth address when it has no System ID.
Identifiers follow the PhdDevice profile's slices: SYSID (EUI-64 as dash-separated upper-case hex
bytes) and BTMAC (EUI-48, same form). Every reference to a device is ``urn:uuid:`` + a UUID5 of its
first identifier, so the same device always gets the same reference.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final

from gateway.fhir.codes import MDC_SYSTEM, CodeTable, code_table
from gateway.fhir.resource import MappedResource, search_token, urn_for

SYSID_SYSTEM: Final = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"  # PhdDevice systemIdIdentifier
BTMAC_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"  # PhdDevice btmacAddressIdentifier
DEVICE_IDENTIFIER_TYPE_SYSTEM: Final = (
    "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers"
)
PHD_DEVICE_PROFILE: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdDevice"
PHG_DEVICE_PROFILE: Final = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhgDevice"

MDC_MOC_VMS_MDS_SIMP: Final = 65573  # PhdDevice type.coding[PhdCode]
MDC_MOC_VMS_MDS_AHD: Final = 531981  # PhgDevice type.coding[MDCType]
MDC_ID_PROD_SPEC_HW: Final = 531974  # MDCDeviceVersionTypes
MDC_ID_PROD_SPEC_SW: Final = 531975
MDC_ID_PROD_SPEC_FW: Final = 531976

EUI64_HEX_DIGITS: Final = 16
EUI48_HEX_DIGITS: Final = 12
_SEPARATORS = re.compile(r"[:\-\s]")
_HEX = re.compile(r"^[0-9A-F]+$")


def normalise_eui(value: str, digits: tuple[int, ...], what: str) -> str:
    """Upper-case hex without separators; ``ValueError`` unless it has one of ``digits``."""
    text = _SEPARATORS.sub("", value).upper()
    if not _HEX.fullmatch(text) or len(text) not in digits:
        sizes = " or ".join(str(d) for d in digits)
        raise ValueError(f"{what} {value!r}: expected {sizes} hexadecimal digits")
    return text


def dashed(hex_digits: str) -> str:
    """``74E8FFFE...`` → ``74-E8-FF-FE-...`` (the PhdDevice identifier value form)."""
    return "-".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """What the gateway knows about a sensor (Device Information service, advertisement).

    ``system_id`` is the EUI-64 System ID (0x2A23) or, for a sensor without one, its Bluetooth
    address (EUI-48); separators are accepted and removed. ``bt_address`` adds the Bluetooth
    address beside an EUI-64. ``specialization`` is the MDC device specialization code
    (``MDC_DEV_SPEC_PROFILE_*``, from the device profile).
    """

    system_id: str
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    hardware_revision: str | None = None
    firmware_revision: str | None = None
    software_revision: str | None = None
    specialization: int | None = None
    name: str | None = None
    bt_address: str | None = None

    def __post_init__(self) -> None:
        sysid = normalise_eui(
            self.system_id, (EUI64_HEX_DIGITS, EUI48_HEX_DIGITS), "sensor system id"
        )
        object.__setattr__(self, "system_id", sysid)
        if self.bt_address is not None:
            mac = normalise_eui(self.bt_address, (EUI48_HEX_DIGITS,), "Bluetooth address")
            if len(sysid) == EUI48_HEX_DIGITS and mac != sysid:
                raise ValueError("bt_address differs from the EUI-48 system_id")
            object.__setattr__(self, "bt_address", mac)

    @property
    def has_eui64(self) -> bool:
        return len(self.system_id) == EUI64_HEX_DIGITS

    @property
    def mac(self) -> str | None:
        return self.bt_address if self.has_eui64 else self.system_id


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """The gateway itself (PhgDevice): its EUI-64 (or EUI-48) and what it supports."""

    system_id: str
    manufacturer: str | None = None
    model: str | None = None
    software_revision: str | None = None
    name: str | None = None
    specializations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        sysid = normalise_eui(
            self.system_id, (EUI64_HEX_DIGITS, EUI48_HEX_DIGITS), "gateway system id"
        )
        object.__setattr__(self, "system_id", sysid)

    @property
    def has_eui64(self) -> bool:
        return len(self.system_id) == EUI64_HEX_DIGITS


def _identifier(code: str, display: str, system: str, hex_digits: str) -> dict[str, Any]:
    return {
        "type": {
            "coding": [{"system": DEVICE_IDENTIFIER_TYPE_SYSTEM, "code": code, "display": display}]
        },
        "system": system,
        "value": dashed(hex_digits),
    }


def _identifiers(eui64: str | None, mac: str | None) -> list[dict[str, Any]]:
    out = []
    if eui64 is not None:
        out.append(_identifier("SYSID", "IEEE 11073 System Identifier", SYSID_SYSTEM, eui64))
    if mac is not None:
        out.append(_identifier("BTMAC", "Bluetooth MAC address", BTMAC_SYSTEM, mac))
    return out


def _primary(eui64: str | None, mac: str | None) -> tuple[str, str]:
    if eui64 is not None:
        return SYSID_SYSTEM, dashed(eui64)
    if mac is not None:
        return BTMAC_SYSTEM, dashed(mac)
    raise ValueError("a device needs an EUI-64 system id or a Bluetooth address")


def _mdc_concept(table: CodeTable, code: int) -> dict[str, Any]:
    entry = table.mdc.get(code)
    if entry is None:
        return {"coding": [{"system": MDC_SYSTEM, "code": str(code)}]}
    return {"coding": [entry.coding.as_json()], "text": entry.display}


def _versions(table: CodeTable, versions: tuple[tuple[int, str | None], ...]) -> list[Any]:
    return [
        {"type": _mdc_concept(table, kind), "value": value}
        for kind, value in versions
        if value is not None
    ]


@functools.lru_cache(maxsize=256)
def sensor_full_url(sensor: SensorInfo) -> str:
    """The ``urn:uuid:`` every Observation from ``sensor`` references."""
    eui64 = sensor.system_id if sensor.has_eui64 else None
    return urn_for(*_primary(eui64, sensor.mac))


@functools.lru_cache(maxsize=16)
def gateway_full_url(gateway: GatewayInfo) -> str:
    eui64 = gateway.system_id if gateway.has_eui64 else None
    mac = None if gateway.has_eui64 else gateway.system_id
    return urn_for(*_primary(eui64, mac))


def sensor_device(sensor: SensorInfo) -> MappedResource:
    """The sensor's Device resource (PhdDevice profile)."""
    table = code_table()
    eui64 = sensor.system_id if sensor.has_eui64 else None
    mac = sensor.mac
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": "phd-" + ".".join(p for p in (eui64, mac) if p),
        "meta": {"profile": [PHD_DEVICE_PROFILE]},
        "identifier": _identifiers(eui64, mac),
    }
    if sensor.name is not None:
        device["deviceName"] = [{"name": sensor.name, "type": "user-friendly-name"}]
    fields = (
        ("manufacturer", sensor.manufacturer),
        ("modelNumber", sensor.model),
        ("serialNumber", sensor.serial),
    )
    device.update({key: value for key, value in fields if value is not None})
    device["type"] = _mdc_concept(table, MDC_MOC_VMS_MDS_SIMP)
    if sensor.specialization is not None:
        device["specialization"] = [{"systemType": _mdc_concept(table, sensor.specialization)}]
    versions = _versions(
        table,
        (
            (MDC_ID_PROD_SPEC_HW, sensor.hardware_revision),
            (MDC_ID_PROD_SPEC_SW, sensor.software_revision),
            (MDC_ID_PROD_SPEC_FW, sensor.firmware_revision),
        ),
    )
    if versions:
        device["version"] = versions
    system, value = _primary(eui64, mac)
    return MappedResource(urn_for(system, value), device, search_token(system, value))


def gateway_device(gateway: GatewayInfo) -> MappedResource:
    """The gateway's Device resource (PhgDevice profile, type MDC 531981)."""
    table = code_table()
    eui64 = gateway.system_id if gateway.has_eui64 else None
    mac = None if gateway.has_eui64 else gateway.system_id
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": "phg-" + gateway.system_id,
        "meta": {"profile": [PHG_DEVICE_PROFILE]},
        "identifier": _identifiers(eui64, mac),
    }
    if gateway.name is not None:
        device["deviceName"] = [{"name": gateway.name, "type": "user-friendly-name"}]
    if gateway.manufacturer is not None:
        device["manufacturer"] = gateway.manufacturer
    if gateway.model is not None:
        device["modelNumber"] = gateway.model
    device["type"] = _mdc_concept(table, MDC_MOC_VMS_MDS_AHD)
    if gateway.specializations:
        device["specialization"] = [
            {"systemType": _mdc_concept(table, code)} for code in gateway.specializations
        ]
    versions = _versions(table, ((MDC_ID_PROD_SPEC_SW, gateway.software_revision),))
    if versions:
        device["version"] = versions
    system, value = _primary(eui64, mac)
    return MappedResource(urn_for(system, value), device, search_token(system, value))
