"""Several sensors of one kind: device lists, keys, distinct identities, and the CLI around them."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections import Counter
from typing import Any

import pytest
from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Advertisement, Device, Peer
from bumble.hci import Address
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from firmware_sim import (
    Simulator,
    cli,
    parse_devices,
    sensor_address,
    sensor_addresses,
    sensor_keys,
)
from firmware_sim import characteristics as ch
from firmware_sim.simulator import MAX_SENSORS
from tests.processes import BEDSIDE_SIM, read_line
from tests.sim_central import FAST, next_value, running, tasks_left

TIMEOUT_S = 30.0
STRESS = "ecg:5,spo2:5,bp:5,thermo:5"


# -- device lists ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("ecg,spo2,bp,thermo", ["ecg", "spo2", "bp", "thermo"]),
        ("ecg:2,bp", ["ecg", "ecg", "bp"]),
        (" thermo : 3 ", ["thermo"] * 3),
        ("bp,ecg,bp", ["bp", "ecg", "bp"]),
        ("ecg:1", ["ecg"]),
        ("ecg,,bp,", ["ecg", "bp"]),  # empty entries were always skipped
        (f"spo2:{MAX_SENSORS}", ["spo2"] * MAX_SENSORS),
        (STRESS, ["ecg"] * 5 + ["spo2"] * 5 + ["bp"] * 5 + ["thermo"] * 5),
    ],
)
def test_parse_devices(text: str, kinds: list[str]) -> None:
    assert parse_devices(text) == kinds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ecg:0", "device 'ecg:0': the count after ':' must be a whole number from 1 to 100"),
        ("ecg:-1", "device 'ecg:-1': the count after ':' must be a whole number"),
        ("ecg:two", "device 'ecg:two': the count after ':' must be a whole number"),
        ("ecg:", "device 'ecg:': the count after ':' must be a whole number"),
        ("ecg:2:3", "device 'ecg:2:3': the count after ':' must be a whole number"),
        ("ecg:101", "device 'ecg:101': the count after ':' must be a whole number from 1 to 100"),
        (":3", "device ':3': no sensor kind before ':'"),
        ("", "device list '': no sensor kinds given"),
        (" , ", "device list ' , ': no sensor kinds given"),
        ("scale:2,ecg", "unknown sensor kind(s) scale; expected some of ecg, spo2, bp"),
        ("ecg:60,bp:41", "101 sensors: at most 100 on one virtual radio"),
    ],
)
def test_parse_devices_rejects_bad_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_devices(text)


def test_keys_name_further_sensors_of_a_kind_by_their_rank() -> None:
    assert sensor_keys(["bp", "ecg", "bp", "bp", "ecg"]) == ["bp", "ecg", "bp-2", "bp-3", "ecg-2"]
    assert sensor_keys(["ecg", "spo2", "bp", "thermo"]) == ["ecg", "spo2", "bp", "thermo"]
    assert Simulator(["thermo", "ecg", "thermo"]).keys == ("thermo", "ecg", "thermo-2")


# -- identities ------------------------------------------------------------------------------------
def _suffix(address: str) -> str:
    return address.replace(":", "")[-4:]


def test_addresses_are_distinct_deterministic_and_keep_the_first_of_a_kind() -> None:
    kinds = parse_devices(STRESS)
    addresses = sensor_addresses(3, kinds)
    assert list(addresses) == sensor_keys(kinds)
    assert addresses == sensor_addresses(3, kinds)  # deterministic
    assert addresses != sensor_addresses(4, kinds)
    assert len(set(addresses.values())) == len(kinds)
    for kind in ("ecg", "spo2", "bp", "thermo"):
        assert addresses[kind] == sensor_address(3, kind)  # what a single sensor always had
        assert addresses[f"{kind}-2"] == sensor_address(3, f"{kind}-2")
    assert all(int(a[:2], 16) >> 6 == 0b11 for a in addresses.values())  # random static


def test_a_clashing_name_suffix_is_derived_again() -> None:
    """The last four hex digits end the name ("Bedside ECG 1C83"): two sensors of a kind whose
    plain addresses share them (found by search: about 7 % of seeds for 100 sensors) get
    distinct ones, and only the later sensor moves."""
    kinds = ["ecg"] * MAX_SENSORS
    keys = sensor_keys(kinds)
    for seed in range(500):
        plain = [sensor_address(seed, key) for key in keys]
        if len({_suffix(a) for a in plain}) < len(plain):
            break
    else:
        pytest.fail("no seed below 500 with a clash; the address derivation changed")
    addresses = sensor_addresses(seed, kinds)
    assert len({_suffix(a) for a in addresses.values()}) == len(kinds)
    moved = [key for key, address in zip(keys, plain, strict=True) if addresses[key] != address]
    assert moved
    first_of_clash = {_suffix(a): key for key, a in reversed(list(zip(keys, plain, strict=True)))}
    for key in moved:
        clashing = first_of_clash[_suffix(sensor_address(seed, key))]
        assert keys.index(clashing) < keys.index(key)  # the earlier sensor keeps its address
        assert addresses[key] == sensor_address(seed, f"{key}#1")


async def test_every_instance_advertises_and_serves_its_own_identity() -> None:
    kinds = ("thermo", "bp", "thermo", "thermo")
    async with running(kinds) as (sim, central):
        assert list(sim.sensors) == ["thermo", "bp", "thermo-2", "thermo-3"]
        assert sim.sensors["thermo"].address == sensor_address(1, "thermo")
        addresses = {sensor.address for sensor in sim.sensors.values()}
        seen = await central.scan(addresses)
        identities: set[tuple[bytes, ...]] = set()
        for key, sensor in sim.sensors.items():
            data = seen[sensor.address].data
            assert data.get(data.COMPLETE_LOCAL_NAME) == sensor.name
            assert sensor.name == f"Bedside {sensor.LABEL} {_suffix(sensor.address)}", key
            link = await central.connect(sensor.address)
            serial = await link.read(ch.SERIAL_NUMBER)
            assert serial == f"{sensor.MODEL}-{sensor.address.replace(':', '')[-6:]}".encode()
            identities.add(
                (await link.read(0x2A00), serial, await link.read(ch.SYSTEM_ID)),
            )
            await link.connection.disconnect()
            await link.disconnected.wait()
        assert len(identities) == len(kinds)  # GAP name, serial and System ID all distinct


async def test_instances_stream_at_the_same_time_each_counting_its_own() -> None:
    async with running(("thermo", "thermo")) as (sim, central):
        first, second = sim.sensors["thermo"], sim.sensors["thermo-2"]
        links = [await central.connect(s.address) for s in (first, second)]
        queues = [await link.subscribe(ch.INTERMEDIATE_TEMPERATURE) for link in links]
        for _ in range(3):
            for queue in queues:
                await next_value(queue)
        for link in links:
            await link.connection.disconnect()
            await link.disconnected.wait()
        assert first.stats.connections == second.stats.connections == 1
        assert first.stats.notifications >= 3
        assert second.stats.notifications >= 3


async def test_controllers_are_given_by_key() -> None:
    """The second thermometer on its own controller (as on ``--hci usb:0 --hci usb:1``): it
    advertises on that controller's air, its twin on the virtual radio is not created."""
    air = LocalLink()  # type: ignore[no-untyped-call]
    dongle = Controller("dongle", link=air)
    radio = Controller("phone", link=air)
    phone = Device.with_hci("phone", Address("F0:F1:F2:F3:F4:F6"), radio, AsyncPipeSink(radio))
    await phone.power_on()
    found = asyncio.Event()
    heard: set[str] = set()

    def on_advertisement(advertisement: Advertisement) -> None:
        heard.add(str(advertisement.address))
        found.set()

    phone.on("advertisement", on_advertisement)
    transport = Transport(dongle, AsyncPipeSink(dongle))
    async with Simulator(
        ["thermo", "thermo"], overrides=FAST, controllers={"thermo-2": transport}
    ) as sim:
        await phone.start_scanning()
        async with asyncio.timeout(TIMEOUT_S):
            await found.wait()
        await phone.stop_scanning()
        assert heard == {sim.sensors["thermo-2"].address}
        assert [c.name for c in sim.link.controllers] == ["thermo controller"]  # no twin
    await phone.power_off()
    assert tasks_left() == []


async def test_controllers_for_unknown_keys_are_rejected() -> None:
    dongle = Controller("dongle")
    transport = Transport(dongle, AsyncPipeSink(dongle))
    with pytest.raises(ValueError, match="controllers given for sensors not simulated: thermo-3"):
        Simulator(["thermo", "thermo"], controllers={"thermo-3": transport})


# -- the command -----------------------------------------------------------------------------------
async def test_cli_count_syntax_and_statistics_lines() -> None:
    process = await asyncio.create_subprocess_exec(
        str(BEDSIDE_SIM),
        *("--hci", "tcp-server:127.0.0.1:0", "--devices", "ecg:2,thermo", "--seed", "4"),
        *("--stats", "--set", "thermo.intermediate_s=0.2"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    interrupted = False
    try:
        assert (await read_line(process.stdout)).startswith("hci\ttcp-server\t")
        listed = [(await read_line(process.stdout)).split("\t") for _ in range(3)]
        addresses = sensor_addresses(4, ["ecg", "ecg", "thermo"])
        assert [row[0] for row in listed] == ["ecg", "ecg-2", "thermo"]
        for key, name, address in listed:
            assert address == addresses[key]
            assert name.endswith(_suffix(address))
        process.send_signal(signal.SIGUSR1)
        live: dict[str, Any] = json.loads(await read_line(process.stdout))
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)  # impatient: the second one must not break the stop
        interrupted = True
        final: dict[str, Any] = json.loads(await read_line(process.stdout))
    finally:
        if not interrupted:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT_S):
            rest = await process.stdout.read()
            stderr = await process.stderr.read()
            code = await process.wait()
    assert code == 0, stderr.decode()
    assert rest == b""  # the final statistics are the last line
    for report, is_final in ((live, False), (final, True)):
        assert (report["event"], report["final"]) == ("stats", is_final)
        assert list(report["sensors"]) == ["ecg", "ecg-2", "thermo"]
        for key, name, address in listed:
            entry = report["sensors"][key]
            assert (entry["name"], entry["address"], entry["connected"]) == (name, address, False)
            assert entry["kind"] == key.split("-")[0]
            assert entry["stats"]["notifications"] == 0  # nobody subscribed
    assert final["sim_time_s"] >= live["sim_time_s"]
    assert (
        final["sensors"]["thermo"]["stats"]["measurements"]
        >= (live["sensors"]["thermo"]["stats"]["measurements"])
    )


async def test_final_statistics_count_exactly_what_a_central_received() -> None:
    """What ``bench/sensors.py`` relies on to count lost notifications: after SIGINT the final
    line counts every notification the central got, and nothing it did not get."""
    process = await asyncio.create_subprocess_exec(
        str(BEDSIDE_SIM),
        *("--hci", "tcp-server:127.0.0.1:0", "--devices", "thermo:2", "--stats"),
        *("--set", "thermo.intermediate_s=0.05", "--set", "advertising_interval_ms=20"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    received: Counter[str] = Counter()
    streaming = asyncio.Event()  # ten values from each
    interrupted = False
    try:
        port = (await read_line(process.stdout)).split("\t")[2]
        addresses = [(await read_line(process.stdout)).split("\t")[2] for _ in range(2)]
        async with await open_transport(f"tcp-client:127.0.0.1:{port}") as transport:
            central = Device.with_hci(
                "central", Address("F0:F1:F2:F3:F4:F7"), transport.source, transport.sink
            )
            await central.power_on()
            gone = [asyncio.Event() for _ in addresses]
            for address, ended in zip(addresses, gone, strict=True):
                connection = await central.connect(Address(address))
                connection.on("disconnection", lambda _reason, ended=ended: ended.set())
                peer = Peer(connection)
                await peer.discover_services()
                for service in peer.services:
                    await service.discover_characteristics()
                (intermediate,) = peer.get_characteristics_by_uuid(
                    UUID.from_16_bits(ch.INTERMEDIATE_TEMPERATURE)
                )

                def count(_value: bytes, address: str = address) -> None:
                    received[address] += 1
                    if min(received[a] for a in addresses) >= 10:
                        streaming.set()

                await peer.subscribe(intermediate, count)
            async with asyncio.timeout(TIMEOUT_S):
                await streaming.wait()
            process.send_signal(signal.SIGINT)  # mid-stream
            interrupted = True
            async with asyncio.timeout(TIMEOUT_S):
                for ended in gone:  # the sensors end the links after their last packet
                    await ended.wait()
                final: dict[str, Any] = json.loads(await read_line(process.stdout))
            await central.power_off()
    finally:
        if not interrupted:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT_S):
            stderr = await process.stderr.read()
            code = await process.wait()
    assert code == 0, stderr.decode()
    assert final["final"] is True
    sent = {e["address"]: e["stats"]["notifications"] for e in final["sensors"].values()}
    assert sent == dict(received)
    assert all(e["stats"]["indications"] == 0 for e in final["sensors"].values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "ecg:0"], "device 'ecg:0': the count after ':' must be a whole number"),
        (["--devices", "scale:3"], "unknown sensor kind(s) scale"),
        (["--devices", ","], "device list ',': no sensor kinds given"),
        (["--hci", "usb:0", "--devices", "thermo:2"], "1 controller(s) for 2 sensor(s)"),
    ],
)
def test_bad_device_lists_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert captured.out == ""
