"""The gateway's live catalog: the sparse service's stored fields, asked over ``Lookup``.

The served BM25 index is where deletes and quarantines land within a second (the sparse pods
follow the ingest writer), so the gateway asks it which of its fused candidates still exist,
and gets their titles and filter fields in the same call (:func:`tandem.search.catalog.known_hits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from tandem.search.catalog import ItemMeta
from tandem.v1 import retriever_pb2, retriever_pb2_grpc
from tandem_services.client import ChannelOptions, _translate
from tandem_services.convert import meta_from_proto


class RemoteCatalog:
    """An :class:`~tandem.search.ItemLookup` over a ``RetrieverService``'s ``Lookup`` RPC.

    Errors are :class:`~tandem.errors.Unavailable` (the searcher then keeps its hits unchecked
    and marks the result degraded), or :class:`~tandem.errors.InvalidInput` for a source that
    stores no fields.
    """

    def __init__(self, target: str, *, source: str = "", options: ChannelOptions | None = None,
                 timeout_s: float = 0.5) -> None:
        self.target = target
        self.source = source
        self.timeout_s = timeout_s
        self.options = options or ChannelOptions()
        self._channel = self.options.channel(target)
        self._stub = retriever_pb2_grpc.RetrieverServiceStub(self._channel)

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """See :meth:`tandem.search.ItemLookup.lookup`."""
        if not item_ids:
            return {}
        request = retriever_pb2.LookupRequest(item_ids=list(item_ids), source=self.source)
        try:
            response = self._stub.Lookup(request, timeout=self.timeout_s, metadata=self.options.metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, f"catalog lookup at {self.target}") from None
        return {s.item_id: meta_from_proto(s) for s in response.items}

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


__all__ = ["RemoteCatalog"]
