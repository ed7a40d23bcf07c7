"""DNS-SD over multicast DNS (python-zeroconf): the gateway announces its page on the LAN so a
technician's laptop finds the box (RFC 6762/6763; docs/contracts.md, "HTTP API").

Service ``_bedside._tcp`` (and ``_https._tcp`` when served over TLS, so generic browsers list
it), instance name the gateway id, TXT records: ``id`` (gateway id), ``version``, ``kid`` (the
signing key's thumbprint), ``tls`` (the certificate's SHA-256 fingerprint, empty without TLS),
``path`` (``/``). On by default when the API listens off the loopback address
(``http.zeroconf`` decides otherwise).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from gateway import __version__

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger(__name__)

SERVICE: Final = "_bedside._tcp.local."
HTTPS_SERVICE: Final = "_https._tcp.local."


def txt_records(
    gateway_id: str, version: str, key_id: str | None, fingerprint: str | None
) -> dict[str, str]:
    return {
        "id": gateway_id,
        "version": version,
        "kid": key_id or "",
        "tls": fingerprint or "",
        "path": "/",
    }


class Advertisement(AbstractAsyncContextManager["Advertisement"]):
    """The gateway's services, registered for the block."""

    def __init__(
        self,
        *,
        gateway_id: str,
        host: str,
        port: int,
        properties: dict[str, str],
        tls: bool,
    ) -> None:
        self.gateway_id = gateway_id
        self.port = port
        self.properties = properties
        self.tls = tls
        self._interfaces = self._listen_interfaces(host)
        self._zeroconf: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []

    @staticmethod
    def _listen_interfaces(host: str) -> Any:
        """Announce where the API listens: on one address, or on every interface."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        return None if address.is_unspecified else [host]

    def infos(self) -> list[AsyncServiceInfo]:
        types = [SERVICE, *([HTTPS_SERVICE] if self.tls else [])]
        server = f"{self.gateway_id}.local."
        addresses = None
        if self._interfaces is not None:
            addresses = [socket.inet_aton(a) for a in self._interfaces if ":" not in a]
        return [
            AsyncServiceInfo(
                kind,
                f"{self.gateway_id}.{kind}",
                port=self.port,
                properties=self.properties,
                server=server,
                addresses=addresses,
            )
            for kind in types
        ]

    async def __aenter__(self) -> Advertisement:
        kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if self._interfaces is not None:
            kwargs["interfaces"] = self._interfaces
        self._zeroconf = AsyncZeroconf(**kwargs)
        self._infos = self.infos()
        for info in self._infos:
            await self._zeroconf.async_register_service(info)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._zeroconf is None:
            return
        for info in self._infos:
            await self._zeroconf.async_unregister_service(info)
        await self._zeroconf.async_close()
        self._zeroconf = None


async def announce_on_lan(
    stack: AsyncExitStack,
    *,
    gateway_id: str,
    host: str,
    port: int,
    key_id: str | None,
    tls_fingerprint: str | None,
) -> None:
    """Announce the page for the life of ``stack``; a network without multicast only warns."""
    advertisement = Advertisement(
        gateway_id=gateway_id,
        host=host,
        port=port,
        properties=txt_records(gateway_id, __version__, key_id, tls_fingerprint),
        tls=tls_fingerprint is not None,
    )
    try:
        await stack.enter_async_context(advertisement)
    except (OSError, RuntimeError) as exc:
        log.warning("cannot announce the gateway on the LAN (zeroconf): %s", exc)
        return
    log.info("announced as %s.%s", gateway_id, SERVICE)
