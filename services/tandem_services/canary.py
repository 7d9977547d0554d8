"""``tandem.v1.CanaryService``: the gateway's arms plan and per-arm windows on the network,
so ``tandem canary`` can drive a running gateway (every replica of it) the way the library
drives an in-process :class:`~tandem.canary.arms.Arms`. Admin tokens only (the interceptor's
``ADMIN_PREFIXES``); bad input is ``INVALID_ARGUMENT`` naming the field.
"""

from __future__ import annotations

import math

import grpc

from tandem.canary.arms import CANDIDATE, CURRENT, Arms, ArmWindow
from tandem.errors import InvalidInput
from tandem.v1 import canary_pb2, canary_pb2_grpc


def _counts(w: ArmWindow) -> canary_pb2.ArmCounts:
    return canary_pb2.ArmCounts(requests=w.requests, errors=w.errors, degraded=w.degraded,
                                zero_results=w.zero_results, p50_ms=w.p50_ms, p99_ms=w.p99_ms,
                                feedback_requests=w.feedback_requests, clicked_requests=w.clicked_requests)


def window_of(counts: canary_pb2.ArmCounts) -> ArmWindow:
    """The :class:`ArmWindow` a ``CanaryStatus`` entry describes."""
    return ArmWindow(counts.requests, counts.errors, counts.degraded, counts.zero_results, counts.p50_ms,
                     counts.p99_ms, counts.feedback_requests, counts.clicked_requests)


class CanaryServicer(canary_pb2_grpc.CanaryServiceServicer):
    """Sets and reports the plan of ``arms``; ``has_candidate`` says whether it matters."""

    def __init__(self, arms: Arms, has_candidate: bool) -> None:
        self.arms, self.has_candidate = arms, has_candidate

    def _status(self) -> canary_pb2.CanaryStatus:
        windows = self.arms.windows()
        return canary_pb2.CanaryStatus(share=self.arms.share, mode=self.arms.mode, has_candidate=self.has_candidate,
                                       arms={arm: _counts(windows[arm]) for arm in (CURRENT, CANDIDATE)})

    async def SetPlan(self, request: canary_pb2.SetPlanRequest, context: grpc.aio.ServicerContext):
        if not math.isfinite(request.share):
            raise InvalidInput(f"`share` must be a number in 0..1, got {request.share}")
        if request.share > 0 and not self.has_candidate:
            raise InvalidInput("`share` must be 0: this gateway serves no candidate version "
                               "(start it with --candidate-generative-model/--candidate-fusion-model)")
        self.arms.set_plan(request.share, request.mode or None)
        if request.reset_windows:
            self.arms.reset_windows()
        return self._status()

    async def Status(self, request: canary_pb2.CanaryStatusRequest, context: grpc.aio.ServicerContext):
        return self._status()


class RemoteArms:
    """:class:`~tandem.canary.arms.ArmControl` over the ``CanaryService`` of one or more gateway
    replicas: a plan is set on every replica (all must accept it, else the error is raised and
    the controller stops), and the windows are their sums (p50/p99: the worst replica's, so a
    slow replica is not averaged away)."""

    def __init__(self, targets: list[str], options: object | None = None, *, timeout_s: float = 5.0) -> None:
        from tandem_services.client import ChannelOptions

        if not targets:
            raise InvalidInput("`--gateway` is required (one per replica)")
        opts = options if isinstance(options, ChannelOptions) else ChannelOptions()
        self.targets, self.timeout_s, self._metadata = targets, timeout_s, opts.metadata()
        self._channels = [opts.channel(t) for t in targets]
        self._stubs = [canary_pb2_grpc.CanaryServiceStub(c) for c in self._channels]
        self._reset_next = False

    def status(self) -> list[canary_pb2.CanaryStatus]:
        """Every replica's status, in ``targets`` order."""
        return [s.Status(canary_pb2.CanaryStatusRequest(), timeout=self.timeout_s, metadata=self._metadata)
                for s in self._stubs]

    def set_plan(self, share: float, mode: str) -> None:
        """Set the plan on every replica (and reset their windows when one was asked for since)."""
        request = canary_pb2.SetPlanRequest(share=share, mode=mode, reset_windows=self._reset_next)
        for stub in self._stubs:
            stub.SetPlan(request, timeout=self.timeout_s, metadata=self._metadata)
        self._reset_next = False

    def reset_windows(self) -> None:
        """Reset with the next :meth:`set_plan` (the controller always sets a plan right after)."""
        self._reset_next = True

    def windows(self) -> dict[str, ArmWindow]:
        """The replicas' windows combined (see the class docstring)."""
        out: dict[str, ArmWindow] = {}
        statuses = self.status()
        for arm in (CURRENT, CANDIDATE):
            ws = [window_of(st.arms[arm]) for st in statuses if arm in st.arms]
            out[arm] = ArmWindow(sum(w.requests for w in ws), sum(w.errors for w in ws),
                                 sum(w.degraded for w in ws), sum(w.zero_results for w in ws),
                                 max((w.p50_ms for w in ws), default=0.0), max((w.p99_ms for w in ws), default=0.0),
                                 sum(w.feedback_requests for w in ws), sum(w.clicked_requests for w in ws))
        return out

    def roll_back_each(self) -> list[tuple[str, str]]:
        """Share 0 on every replica that answers; ``(target, error or "")`` for each."""
        out = []
        for target, stub in zip(self.targets, self._stubs, strict=True):
            try:
                stub.SetPlan(canary_pb2.SetPlanRequest(share=0.0, mode="split"), timeout=self.timeout_s,
                             metadata=self._metadata)
                out.append((target, ""))
            except grpc.RpcError as exc:
                out.append((target, f"{exc.code().name}: {exc.details()}"))
        return out

    def close(self) -> None:
        """Close the channels."""
        for c in self._channels:
            c.close()
