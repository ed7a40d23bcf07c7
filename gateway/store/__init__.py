"""The gateway's SQLite store (WAL): devices, Observations, and the durable outbox.

:class:`Store` is the blocking implementation (one connection, one thread);
:class:`AsyncStore` is what asyncio code uses: it runs every SQLite call in the store's threads.
"""

from gateway.store.aio import AsyncStore
from gateway.store.errors import (
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreFullError,
)
from gateway.store.models import (
    DeviceRecord,
    ObservationRecord,
    OutboxItem,
    OutboxState,
    OutboxStats,
    Released,
    StoredObservation,
    TopicKind,
)
from gateway.store.store import (
    DEFAULT_QUOTA_BYTES,
    STORE_FILENAME,
    BundleFactory,
    BundleSigner,
    Store,
    store_path,
)

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "STORE_FILENAME",
    "AsyncStore",
    "BundleFactory",
    "BundleSigner",
    "DeviceRecord",
    "ObservationRecord",
    "OutboxItem",
    "OutboxState",
    "OutboxStats",
    "Released",
    "SchemaVersionError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoredObservation",
    "TopicKind",
    "store_path",
]
