"""``bedside-sim``: run simulated sensors on a virtual radio or on real controllers.

    bedside-sim --hci tcp-server:127.0.0.1:9411 --devices ecg,spo2,bp,thermo [--scenario NAME]

``--hci`` takes any Bumble transport. Two roles exist:

* the transport leads to a *host* (``tcp-server``, ``ws-server``, ``unix-server``, ``pty``,
  ``vhci``): the simulator plays one controller on its virtual radio and the host (a gateway
  with ``hci:tcp-client:…``, or BlueZ on ``vhci``) sees every simulated sensor around it;
* the transport leads to a *controller* (``usb``, ``pyusb``, ``serial``, ``hci-socket``,
  ``tcp-client``, ``udp``, ``unix``, ``ws-client``, ``android-*``, ``file``): each such controller
  carries exactly one sensor, in ``--devices`` order, advertising over the air so that a phone or
  another gateway sees it. Give ``--hci`` once per sensor (one GATT database per controller is
  what a real device has; Bumble could run several advertising sets on one controller, but they
  would share one GATT server, which no real sensor does).

``--hci-role`` overrides the guess made from the scheme.

``--devices`` lists sensor kinds, each optionally with a count: ``ecg,spo2,bp,thermo`` (one of
each), ``ecg:5,spo2:5,bp:5,thermo:5`` (twenty sensors). The first sensor of a kind is called by the
kind, the further ones ``ecg-2``, ``ecg-3``, … (``firmware_sim.simulator.sensor_keys``). A bad list
(``ecg:0``, ``glucose``) ends the command with exit status 2 and one line on stderr.

The command prints one line per sensor (key, name, address, tab-separated) — preceded by
``hci<TAB>tcp-server<TAB>PORT`` when ``tcp-server:HOST:0`` let the OS choose the port — and runs
until SIGINT or SIGTERM, then exits 0. Statistics: SIGUSR1 (handled before the first line is
printed) makes it print one JSON line::

    {"event": "stats", "final": false, "sim_time_s": 12.5,
     "sensors": {"ecg": {"kind": "ecg", "name": "Bedside ECG 1C83", "address": "…",
                         "connected": true, "stats": {…SensorStats.snapshot()…}}, …}}

and with ``--stats`` it prints the same line with ``"final": true`` on exit, after every sensor
stopped, so the counts are complete (``notifications`` and ``indications`` count only what was
sent to a subscribed central; an indication counts once confirmed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from bumble.transport import open_transport
from bumble.transport.common import Transport

from firmware_sim.devices import KINDS
from firmware_sim.scenarios import ScenarioError
from firmware_sim.scenarios import load as load_scenario
from firmware_sim.simulator import DEFAULT_KINDS, Simulator, parse_devices, sensor_keys

logger = logging.getLogger("firmware_sim")

# Transport schemes whose far end is a host (the simulator then plays the controller).
HOST_FACING_SCHEMES: Final = frozenset({"tcp-server", "ws-server", "unix-server", "pty", "vhci"})
DEFAULT_HCI: Final = "tcp-server:127.0.0.1:9411"
EXIT_USAGE: Final = 2
STATS_EVENT: Final = "stats"
EPILOG: Final = """\
devices:
  Comma-separated kinds, each with an optional count:
    --devices ecg,spo2,bp,thermo            one of each (the default)
    --devices ecg:5,spo2:5,bp:5,thermo:5    five of each, twenty sensors
  Further sensors of a kind are called ecg-2, ecg-3, ... in the lines printed
  at start; each has its own address, name, System ID and serial number.

output:
  One line per sensor (key, name, address; tab-separated) once the radio is
  up. SIGUSR1 prints a JSON line of per-sensor statistics; --stats prints a
  final one on exit.
"""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bedside-sim",
        description="Simulated Bluetooth LE medical sensors (ECG, SpO2, BP, thermometer).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--hci",
        action="append",
        metavar="TRANSPORT",
        help=f"Bumble transport (repeatable for real controllers); default {DEFAULT_HCI}",
    )
    parser.add_argument(
        "--hci-role",
        choices=("auto", "host", "controller"),
        default="auto",
        help="what is at the far end of --hci: a host (virtual radio) or a controller",
    )
    parser.add_argument(
        "--devices",
        default=",".join(DEFAULT_KINDS),
        metavar="KIND[:COUNT],...",
        help=f"sensor kinds ({', '.join(KINDS)}), each with an optional count, e.g. "
        "ecg:5,spo2:5,bp:5,thermo:5 (default: %(default)s)",
    )
    parser.add_argument("--scenario", default="normal", help="built-in name or TOML file")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set bp.interval_s=10 (value in TOML syntax)",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="on exit, print a JSON line of per-sensor statistics (SIGUSR1 prints one any time)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default: %(default)s)",
    )
    return parser.parse_args(argv)


def parse_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE in TOML syntax (bare words are strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {text!r}: expected KEY=VALUE")
    try:
        value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def hci_role(spec: str, forced: str) -> str:
    if forced != "auto":
        return forced
    scheme = spec.split(":", 1)[0]
    return "host" if scheme in HOST_FACING_SCHEMES else "controller"


def stats_report(sim: Simulator, *, final: bool) -> dict[str, Any]:
    """What ``SIGUSR1`` and ``--stats`` print: every sensor's ``SensorStats`` by key."""
    sensors = list(sim.sensors.values())
    return {
        "event": STATS_EVENT,
        "final": final,
        "sim_time_s": round(sensors[0].sim_time(), 3) if sensors else 0.0,
        "sensors": {
            key: {
                "kind": sensor.kind,
                "name": sensor.name,
                "address": sensor.address,
                "connected": sensor.connected,
                "stats": sensor.stats.snapshot(),
            }
            for key, sensor in sim.sensors.items()
        },
    }


def _print_stats(sim: Simulator, *, final: bool) -> None:
    print(json.dumps(stats_report(sim, final=final)), flush=True)


async def run(args: argparse.Namespace) -> int:
    kinds = parse_devices(args.devices)
    specs = args.hci or [DEFAULT_HCI]
    roles = {hci_role(spec, args.hci_role) for spec in specs}
    if len(roles) > 1:
        print("bedside-sim: --hci mixes host and controller transports", file=sys.stderr)
        return EXIT_USAGE
    role = roles.pop()
    if role == "host" and len(specs) != 1:
        print("bedside-sim: give one host-facing --hci", file=sys.stderr)
        return EXIT_USAGE
    if role == "controller" and len(specs) != len(kinds):
        print(
            f"bedside-sim: {len(specs)} controller(s) for {len(kinds)} sensor(s): one --hci per "
            "sensor, in --devices order",
            file=sys.stderr,
        )
        return EXIT_USAGE
    overrides = dict(parse_override(text) for text in args.set)
    load_scenario(args.scenario, overrides)  # fail on a bad scenario before opening anything

    transports: list[Transport] = []
    try:
        for spec in specs:  # one by one, so that those already open are closed on failure
            transports.append(await open_transport(spec))  # noqa: PERF401
        keys = sensor_keys(kinds)
        controllers = dict(zip(keys, transports, strict=True)) if role == "controller" else {}
        simulator = Simulator(
            kinds, args.scenario, seed=args.seed, overrides=overrides, controllers=controllers
        )
        # From here to the final statistics, SIGINT/SIGTERM ask for a clean stop (a second one
        # while stopping changes nothing; the stop is bounded) and SIGUSR1 prints statistics.
        with _signal_handlers(lambda: _print_stats(simulator, final=False)) as stop:
            async with simulator as sim:
                if role == "host":
                    sim.attach_host_transport(transports[0])
                    port = _bound_port(transports[0])
                    if port is not None and specs[0].endswith(":0"):  # the OS chose the port
                        print(f"hci\ttcp-server\t{port}", flush=True)
                for key, sensor in sim.sensors.items():
                    print(f"{key}\t{sensor.name}\t{sensor.address}", flush=True)
                await stop.wait()
            if args.stats:  # every sensor has stopped: the counts are final
                _print_stats(simulator, final=True)
    finally:
        for transport in transports:
            await close_transport(transport)
    return 0


async def close_transport(transport: Transport) -> None:
    """Close a Bumble transport, including the listening socket of a server transport (Bumble's
    ``TcpServerTransport.close()`` leaves its ``asyncio.Server`` open)."""
    await transport.close()
    server = getattr(transport, "server", None)
    if isinstance(server, asyncio.AbstractServer):
        server.close()
        await server.wait_closed()


def _bound_port(transport: Transport) -> int | None:
    server = getattr(transport, "server", None)
    sockets = getattr(server, "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    return None


@contextlib.contextmanager
def _signal_handlers(on_usr1: Callable[[], None]) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM; SIGUSR1 calls ``on_usr1`` meanwhile."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, on_usr1)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        if stop.is_set():
            # Already stopping: a further SIGINT/SIGTERM (an impatient second Ctrl-C) must not
            # interrupt the final statistics and the exit that follow.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(run(args))
    except (ScenarioError, ValueError) as exc:
        print(f"bedside-sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally catches SIGINT first
        return 0
    except OSError as exc:
        print(f"bedside-sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
