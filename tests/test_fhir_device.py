"""Sensor and gateway Device resources (PHD IG PhdDevice / PhgDevice profiles)."""

from __future__ import annotations

import pytest

from gateway.fhir import GatewayInfo, SensorInfo, gateway_device, sensor_device
from gateway.fhir.device import gateway_full_url, sensor_full_url
from gateway.fhir.validate import r4b_model

MDC = "urn:iso:std:iso:11073:10101"
SYSID = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
BTMAC = "http://hl7.org/fhir/sid/eui-48/bluetooth"
ID_TYPES = "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers"


def _sysid(value: str) -> dict[str, object]:
    return {
        "type": {
            "coding": [
                {"system": ID_TYPES, "code": "SYSID", "display": "IEEE 11073 System Identifier"}
            ]
        },
        "system": SYSID,
        "value": value,
    }


def _btmac(value: str) -> dict[str, object]:
    return {
        "type": {
            "coding": [{"system": ID_TYPES, "code": "BTMAC", "display": "Bluetooth MAC address"}]
        },
        "system": BTMAC,
        "value": value,
    }


def test_sensor_device_from_device_information() -> None:
    # PHD IG example phd-74E8FFFEFF051C00.001C05FFE874.json (Nonin 3230 pulse oximeter): the same
    # system id and Bluetooth address give the same resource id and identifier values.
    sensor = SensorInfo(
        "74-E8-FF-FE-FF-05-1C-00",
        manufacturer="Nonin_Medical_Inc.",
        model="Model 3230",
        serial="501900083",
        hardware_revision="r1.0",
        firmware_revision="r2.1",
        software_revision="r1.5 9.7",
        specialization=528388,
        name="Nonin3230_501900083",
        bt_address="00:1c:05:ff:e8:74",
    )
    mapped = sensor_device(sensor)
    r4b_model(mapped.resource)
    assert mapped.resource == {
        "resourceType": "Device",
        "id": "phd-74E8FFFEFF051C00.001C05FFE874",
        "meta": {"profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhdDevice"]},
        "identifier": [_sysid("74-E8-FF-FE-FF-05-1C-00"), _btmac("00-1C-05-FF-E8-74")],
        "deviceName": [{"name": "Nonin3230_501900083", "type": "user-friendly-name"}],
        "manufacturer": "Nonin_Medical_Inc.",
        "modelNumber": "Model 3230",
        "serialNumber": "501900083",
        "type": {
            "coding": [{"system": MDC, "code": "65573", "display": "MDC_MOC_VMS_MDS_SIMP"}],
            "text": "Personal health device",
        },
        "specialization": [
            {
                "systemType": {
                    "coding": [
                        {
                            "system": MDC,
                            "code": "528388",
                            "display": "MDC_DEV_SPEC_PROFILE_PULS_OXIM",
                        }
                    ],
                    "text": "Pulse oximeter",
                }
            }
        ],
        "version": [
            {
                "type": {
                    "coding": [{"system": MDC, "code": code, "display": ref}],
                    "text": text,
                },
                "value": value,
            }
            for code, ref, text, value in (
                ("531974", "MDC_ID_PROD_SPEC_HW", "Hardware revision", "r1.0"),
                ("531975", "MDC_ID_PROD_SPEC_SW", "Software revision", "r1.5 9.7"),
                ("531976", "MDC_ID_PROD_SPEC_FW", "Firmware revision", "r2.1"),
            )
        ],
    }
    assert mapped.full_url == sensor_full_url(sensor)
    assert mapped.if_none_exist == f"identifier={SYSID}|74-E8-FF-FE-FF-05-1C-00"


def test_sensor_without_system_id_is_identified_by_its_bluetooth_address() -> None:
    sensor = SensorInfo("00:1C:05:FF:E8:74")
    mapped = sensor_device(sensor)
    r4b_model(mapped.resource)
    assert mapped.resource["id"] == "phd-001C05FFE874"
    assert mapped.resource["identifier"] == [_btmac("00-1C-05-FF-E8-74")]
    assert mapped.if_none_exist == f"identifier={BTMAC}|00-1C-05-FF-E8-74"
    assert "manufacturer" not in mapped.resource
    assert "version" not in mapped.resource


def test_gateway_device() -> None:
    gateway = GatewayInfo(
        "ecde3d4e58532d31",
        manufacturer="Bedside",
        model="Gateway",
        software_revision="0.1.0",
        name="bedside-01",
        specializations=(528390, 528388),
    )
    mapped = gateway_device(gateway)
    r4b_model(mapped.resource)
    device = mapped.resource
    assert device["id"] == "phg-ECDE3D4E58532D31"
    assert device["meta"] == {
        "profile": ["http://hl7.org/fhir/uv/phd/StructureDefinition/PhgDevice"]
    }
    assert device["identifier"] == [_sysid("EC-DE-3D-4E-58-53-2D-31")]
    # PhgDevice type.coding[MDCType] = 531981 (docs/standards.md: gateway Device type MDC 531981).
    assert device["type"]["coding"] == [
        {"system": MDC, "code": "531981", "display": "MDC_MOC_VMS_MDS_AHD"}
    ]
    assert [s["systemType"]["coding"][0]["code"] for s in device["specialization"]] == [
        "528390",
        "528388",
    ]
    assert device["version"][0]["value"] == "0.1.0"
    assert device["deviceName"] == [{"name": "bedside-01", "type": "user-friendly-name"}]
    assert mapped.full_url == gateway_full_url(gateway)


def test_full_urls_are_stable_and_distinct() -> None:
    a = SensorInfo("001BDC0FFFFE1234")
    assert sensor_full_url(a) == sensor_full_url(SensorInfo("00-1b-dc-0f-ff-fe-12-34"))
    assert sensor_full_url(a) != sensor_full_url(SensorInfo("001BDC0FFFFE1235"))
    assert sensor_full_url(a).startswith("urn:uuid:")


@pytest.mark.parametrize(
    ("system_id", "bt_address"),
    [
        ("001BDC0FFFFE12", None),  # 14 digits
        ("001BDC0FFFFE12345", None),
        ("XX1BDC0FFFFE1234", None),
        ("001BDC0FFFFE1234", "001C05FFE8"),
        ("001C05FFE874", "001C05FFE875"),  # an EUI-48 system id is the address
    ],
)
def test_bad_identifiers_are_refused(system_id: str, bt_address: str | None) -> None:
    with pytest.raises(ValueError, match=r"hexadecimal digits|differs"):
        SensorInfo(system_id, bt_address=bt_address)


def test_gateway_identifier_is_checked() -> None:
    with pytest.raises(ValueError, match="gateway system id"):
        GatewayInfo("not-hex")
