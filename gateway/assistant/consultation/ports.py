"""What the consultation depends on, as protocols: the sensors (``SensorManager``), the
retriever, the store, the sensor profiles; and the resolver of the Devices a draft cites."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from gateway.fhir.device import SensorInfo, sensor_device, sensor_full_url
from gateway.fhir.resource import MappedResource
from gateway.profiles import Burden
from gateway.store.models import StoredObservation, TopicKind

S = TypeVar("S")


class SensorStatusLike(Protocol):
    """A sensor session's visible state (``gateway.ble.session.SessionStatus``)."""

    @property
    def address(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...


class Sensors(Protocol):
    """Measure on demand (``gateway.ble.manager.SensorManager``)."""

    def can_measure(self) -> Mapping[str, Sequence[str]]: ...
    def statuses(self) -> Sequence[SensorStatusLike]: ...
    async def measure(
        self,
        loinc_code: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the manager's API takes a timeout
        *,
        max_burden: Burden = Burden.CUFF_INFLATION,
    ) -> Mapping[str, Any]:
        """The Observation, or a ``gateway.ble.session.SensorError`` (its ``failure`` says
        why)."""
        ...


class PassageLike(Protocol):
    """A retrieved passage (``gateway.rag.retriever.Passage``)."""

    @property
    def citation(self) -> str: ...
    @property
    def text(self) -> str: ...
    def as_dict(self) -> dict[str, object]: ...


class RetrieverLike(Protocol):
    async def search(
        self, query: str, k: int = ..., threshold: float | None = None
    ) -> Sequence[PassageLike]: ...


class DraftStore(Protocol):
    """The store's part the consultation uses (``gateway.store.aio.AsyncStore``)."""

    async def latest_observations(self, limit: int) -> list[StoredObservation]: ...
    async def enqueue_bundle(self, kind: TopicKind, bundle: Mapping[str, Any]) -> str | None: ...


class DraftSink(Protocol):
    """Where a closed consultation's draft goes (``gateway.review.service.ReviewService``):
    recorded as the first version of a draft under review, signed and forwarded."""

    async def add_draft(self, draft_id: str, bundle: Mapping[str, Any]) -> dict[str, Any]: ...


class MeasureSpec(Protocol):
    """How a sensor kind measures on demand (``gateway.profiles.Measure``)."""

    @property
    def timeout_s(self) -> float: ...


class SensorProfile(Protocol):
    """A sensor kind (``gateway.profiles.DeviceProfile``): the LOINC codes it measures and how
    long a measurement on demand may take (``[measure] timeout_s`` of its profile file)."""

    @property
    def loinc(self) -> Sequence[str]: ...
    @property
    def measure(self) -> MeasureSpec: ...


DeviceResolver = Callable[[str], MappedResource | None]


def sensor_device_resolver(
    statuses: Callable[[], Iterable[S]], sensor_info: Callable[[S], SensorInfo]
) -> DeviceResolver:
    """Device reference (``urn:uuid``) → the sensor's Device, from the live sessions
    (``manager.statuses`` and ``ingest.sensor_info``), for the draft Bundle."""

    def resolve(reference: str) -> MappedResource | None:
        for status in statuses():
            try:
                info = sensor_info(status)
            except ValueError:  # a session that has not read its identity yet
                continue
            if sensor_full_url(info) == reference:
                return sensor_device(info)
        return None

    return resolve
