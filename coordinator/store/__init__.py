"""The Store protocol (etcd v3 semantics) and its implementations."""

from coordinator.store._protocol import (
    Compacted,
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    RangeResult,
    Store,
    TxnResult,
    WatchEvent,
    prefix_end,
)

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "Op",
    "Put",
    "RangeResult",
    "Store",
    "TxnResult",
    "WatchEvent",
    "prefix_end",
]
