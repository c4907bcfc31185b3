"""Persisting: durable storage backends for Pulsing's distributed queue.

``import persisting as pst`` and register a backend with Pulsing::

    from pulsing.streaming import register_backend
    register_backend("persisting", pst.queue.PersistingBackend)

The storage engine is Rust (a segmented, checksummed WAL in front of Lance datasets);
this package is its Python face.
"""

from __future__ import annotations

import atexit

from . import queue
from ._native import __version__, close_gate

# no storage thread may take the GIL once the interpreter finalizes
atexit.register(close_gate)
from .errors import (
    BucketLockedError,
    InvalidOptionError,
    SchemaError,
    StorageError,
    StoreUnavailableError,
    LogStartError,
    WALError,
)
from .queue import LanceBackend, PersistingBackend, StorageBackend

__all__ = [
    "queue",
    "LanceBackend",
    "PersistingBackend",
    "StorageBackend",
    "StorageError",
    "WALError",
    "InvalidOptionError",
    "SchemaError",
    "BucketLockedError",
    "StoreUnavailableError",
    "LogStartError",
    "__version__",
]
