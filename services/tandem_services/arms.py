"""The gateway's two arms on the network: ``SearchService`` over a *current* and an optional
*candidate* searcher, routed by :class:`tandem.canary.Arms`.

Every response carries a ``request_id`` (the caller's or a new one) and the ``arm`` that
served it; each hit names its arm too, which is what clients report in feedback. Routed
users get the candidate's list (``split``) or one team-draft interleaved list of both arms
(``interleave``). A candidate that fails is counted against it (the controller's error-rate
guardrail) and the request is answered by current instead, so a bad candidate costs no
failed request. What each request served is kept for a while (:class:`ServedLog`) so the
``FeedbackService`` of the same process can label events with the right arm.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import OrderedDict

import grpc

from tandem.canary.arms import CANDIDATE, CURRENT, INTERLEAVED, Arms
from tandem.errors import InvalidInput
from tandem.feedback.events import MAX_ID_CHARS
from tandem.interleave import TEAM_A, TEAM_B, team_draft
from tandem.v1 import search_pb2, search_pb2_grpc
from tandem_services.servicers import SearchServicer


class ServedLog:
    """request_id → (route, {item_id: arm}) of the most recent ``size`` responses (thread-safe)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, dict[str, str]]] = OrderedDict()
        self._mu = threading.Lock()

    def put(self, request_id: str, arms: dict[str, str], route: str = CURRENT) -> None:
        """Remember how ``request_id`` was routed and which arm showed each of its items."""
        with self._mu:
            self._items[request_id] = (route, arms)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def arm(self, request_id: str, item_id: str) -> str | None:
        """The arm that showed ``item_id`` in ``request_id``'s response, if this process served it."""
        with self._mu:
            served = self._items.get(request_id)
        return None if served is None else served[1].get(item_id)

    def route(self, request_id: str) -> str | None:
        """``current``, ``candidate`` or ``interleaved`` for a request this process served."""
        with self._mu:
            served = self._items.get(request_id)
        return None if served is None else served[0]


class ArmedSearchServicer(search_pb2_grpc.SearchServiceServicer):
    """``tandem.v1.SearchService`` over ``current`` and ``candidate`` (see the module docstring)."""

    def __init__(self, current: SearchServicer, candidate: SearchServicer | None = None,
                 arms: Arms | None = None, served: ServedLog | None = None) -> None:
        self.current, self.candidate = current, candidate
        self.arms = arms or Arms()
        self.served = served or ServedLog()

    async def _timed(self, arm: str, servicer: SearchServicer, request: search_pb2.SearchRequest,
                     context: grpc.aio.ServicerContext) -> search_pb2.SearchResponse:
        started = time.perf_counter()
        try:
            response = await servicer.Search(request, context)
        except InvalidInput:
            raise  # the caller's mistake, not the arm's
        except Exception:
            self.arms.record(arm, time.perf_counter() - started, error=True)
            raise
        self.arms.record(arm, time.perf_counter() - started, degraded=response.degraded, hits=len(response.hits))
        return response

    async def Search(self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext):
        request_id = request.request_id.strip()
        if len(request_id) > MAX_ID_CHARS:
            raise InvalidInput(f"`request_id` is {len(request_id)} characters; the limit is {MAX_ID_CHARS}")
        request_id = request_id or uuid.uuid4().hex
        candidate = self.candidate
        route = self.arms.route(request.user_id, request_id) if candidate is not None else CURRENT
        if route == INTERLEAVED and candidate is not None:
            response = await self._interleaved(request, request_id, context, candidate)
        elif route == CANDIDATE and candidate is not None:
            try:
                response = await self._timed(CANDIDATE, candidate, request, context)
            except InvalidInput:
                raise
            except Exception:  # noqa: BLE001 - any candidate fault: counted, and current answers
                response, route = await self._timed(CURRENT, self.current, request, context), CURRENT
        else:
            response = await self._timed(CURRENT, self.current, request, context)
        if route != INTERLEAVED:
            response.arm = route
            for hit in response.hits:
                hit.arm = route
        response.request_id = request_id
        self.served.put(request_id, {h.item_id: h.arm for h in response.hits}, route)
        return response

    async def _interleaved(self, request: search_pb2.SearchRequest, request_id: str,
                           context: grpc.aio.ServicerContext,
                           candidate: SearchServicer) -> search_pb2.SearchResponse:
        cur, cand = await asyncio.gather(self._timed(CURRENT, self.current, request, context),
                                         self._timed(CANDIDATE, candidate, request, context),
                                         return_exceptions=True)
        if isinstance(cur, BaseException):
            raise cur
        if isinstance(cand, BaseException):
            if isinstance(cand, InvalidInput):
                raise cand
            cur.arm = CURRENT
            for hit in cur.hits:
                hit.arm = CURRENT
            return cur
        by_team = {TEAM_A: {h.item_id: h for h in cur.hits}, TEAM_B: {h.item_id: h for h in cand.hits}}
        k = max(len(cur.hits), len(cand.hits))
        merged = team_draft([h.item_id for h in cur.hits], [h.item_id for h in cand.hits], k, random.Random(request_id))
        response = search_pb2.SearchResponse()
        response.CopyFrom(cur)
        del response.hits[:]
        for item_id, team in merged:
            hit = response.hits.add()
            hit.CopyFrom(by_team[team][item_id])
            hit.arm = CURRENT if team == TEAM_A else CANDIDATE
        response.degraded = cur.degraded or cand.degraded
        response.degraded_reasons.extend(f"candidate/{r}" for r in cand.degraded_reasons)
        for name, version in cand.versions.items():
            response.versions[f"candidate/{name}"] = version
        response.cache_hit = cur.cache_hit and cand.cache_hit
        response.took_ms = max(cur.took_ms, cand.took_ms)
        response.arm = INTERLEAVED
        return response
