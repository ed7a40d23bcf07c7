"""``bedside-sim``: the HCI-over-TCP path end to end, and the command's argument handling."""

from __future__ import annotations

import asyncio
import signal

import pytest
from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Advertisement, Device, Peer
from bumble.hci import Address
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from firmware_sim import cli, sensor_address
from tests.processes import BEDSIDE_SIM, read_line

TIMEOUT_S = 30.0


async def test_tcp_server_presents_every_sensor_to_a_bumble_central() -> None:
    assert BEDSIDE_SIM.exists(), "the console script is installed with the package"
    process = await asyncio.create_subprocess_exec(
        str(BEDSIDE_SIM),
        "--hci",
        "tcp-server:127.0.0.1:0",
        "--devices",
        "ecg,spo2,bp,thermo",
        "--seed",
        "3",
        "--set",
        "advertising_interval_ms=20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        hci_line = await read_line(process.stdout)
        listed = [(await read_line(process.stdout)).split("\t") for _ in range(4)]
        kind, scheme, port = hci_line.split("\t")
        assert (kind, scheme) == ("hci", "tcp-server")
        assert [row[0] for row in listed] == ["ecg", "spo2", "bp", "thermo"]
        for kind, name, address in listed:
            assert address == sensor_address(3, kind)
            assert name.endswith(address.replace(":", "")[-4:])

        seen: dict[str, str] = {}
        everyone = asyncio.Event()

        def on_advertisement(advertisement: Advertisement) -> None:
            name = advertisement.data.get(advertisement.data.COMPLETE_LOCAL_NAME)
            if isinstance(name, str):
                seen[str(advertisement.address)] = name
            if len(seen) == len(listed):
                everyone.set()

        async with await open_transport(f"tcp-client:127.0.0.1:{port}") as transport:
            central = Device.with_hci(
                "gateway", Address("F0:F1:F2:F3:F4:F5"), transport.source, transport.sink
            )
            await central.power_on()
            central.on("advertisement", on_advertisement)
            await central.start_scanning()
            async with asyncio.timeout(TIMEOUT_S):
                await everyone.wait()
            await central.stop_scanning()
            await central.power_off()
        assert seen == {address: name for _, name, address in listed}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT_S):
            stderr = await process.stderr.read()
            code = await process.wait()
    assert code == 0, stderr.decode()


async def test_sensor_on_a_controller_reached_over_hci() -> None:
    """``--hci tcp-client:…`` is a controller (as ``usb:0`` would be): the sensor runs its own
    host stack on it and advertises on that controller's radio, where a phone finds it."""
    link = LocalLink()  # type: ignore[no-untyped-call]  # the dongle's "air"
    server = await open_transport("tcp-server:127.0.0.1:0")
    port = server.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    Controller("dongle", host_source=server.source, host_sink=server.sink, link=link)
    radio = Controller("phone", link=link)
    phone = Device.with_hci("phone", Address("F0:F1:F2:F3:F4:F6"), radio, AsyncPipeSink(radio))
    await phone.power_on()
    process = await asyncio.create_subprocess_exec(
        str(BEDSIDE_SIM),
        *("--hci", f"tcp-client:127.0.0.1:{port}", "--devices", "thermo", "--seed", "5"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        kind, name, address = (await read_line(process.stdout)).split("\t")
        assert (kind, address) == ("thermo", sensor_address(5, "thermo"))
        found = asyncio.Event()

        def on_advertisement(advertisement: Advertisement) -> None:
            data = advertisement.data
            if str(advertisement.address) == address:
                assert data.get(data.COMPLETE_LOCAL_NAME) == name
                found.set()

        phone.on("advertisement", on_advertisement)
        await phone.start_scanning()
        async with asyncio.timeout(TIMEOUT_S):
            await found.wait()
        await phone.stop_scanning()
        connection = await phone.connect(Address(address))
        peer = Peer(connection)
        await peer.discover_services()
        for service in peer.services:
            await service.discover_characteristics()
        model = peer.get_characteristics_by_uuid(UUID.from_16_bits(0x2A24))[0]
        assert await model.read_value() == b"BS-TH400"
        await connection.disconnect()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            stderr = await process.stderr.read()
            code = await process.wait()
        await phone.power_off()
        await cli.close_transport(server)
    assert code == 0, stderr.decode()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "ecg,scale"], "unknown sensor kind(s) scale"),
        (["--scenario", "no-such"], "scenario 'no-such': neither a built-in scenario"),
        (["--set", "bp.interval_s=0"], "bp.interval_s: Input should be greater than 0"),
        (["--set", "novalue"], "--set 'novalue': expected KEY=VALUE"),
        (["--hci", "usb:0", "--devices", "ecg,bp"], "1 controller(s) for 2 sensor(s)"),
        (["--hci", "tcp-server:_:1", "--hci", "usb:0"], "mixes host and controller"),
        (["--hci", "tcp-server:_:1", "--hci", "tcp-server:_:2"], "one host-facing --hci"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bp.interval_s=10", ("bp.interval_s", 10)),
        ("spo2.pleth = true", ("spo2.pleth", True)),
        ("thermo.interval_s=2.5", ("thermo.interval_s", 2.5)),
        ("name=ward-round", ("name", "ward-round")),
        ('name="ward round"', ("name", "ward round")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, object]) -> None:
    assert cli.parse_override(text) == expected


@pytest.mark.parametrize(
    ("spec", "forced", "role"),
    [
        ("tcp-server:127.0.0.1:9411", "auto", "host"),
        ("vhci", "auto", "host"),
        ("pty:sim", "auto", "host"),
        ("usb:0", "auto", "controller"),
        ("tcp-client:127.0.0.1:9000", "auto", "controller"),
        ("serial:/dev/ttyACM0", "auto", "controller"),
        ("usb:0", "host", "host"),
    ],
)
def test_hci_role(spec: str, forced: str, role: str) -> None:
    assert cli.hci_role(spec, forced) == role
