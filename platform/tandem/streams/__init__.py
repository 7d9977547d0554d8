"""Item streams: Kafka producer and ingest consumer of item events, the catalog store they
feed, and the crash-safe applier shared with the JSONL file source.

Importing this package does not import kafka-python or start the JVM; the producer, the
consumer and the live index load them when constructed.
"""

from tandem.streams.apply import Applier, BatchReport, LazyBM25Index, LiveIndex
from tandem.streams.config import StreamSettings
from tandem.streams.store import ApplyResult, CatalogStore, Change, SnapshotManifest

__all__ = [
    "Applier",
    "ApplyResult",
    "BatchReport",
    "CatalogStore",
    "Change",
    "LazyBM25Index",
    "LiveIndex",
    "SnapshotManifest",
    "StreamSettings",
]
