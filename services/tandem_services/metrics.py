"""Prometheus metrics of the services (the core adds cache and per-source metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

#: Latency buckets from 0.25 ms (cache hits) to 5 s (a cold generative batch).
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_REQUESTS = Counter("tandem_rpc_requests_total", "gRPC requests by method and status code.", ["method", "code"])
RPC_LATENCY = Histogram("tandem_rpc_latency_seconds", "gRPC server-side latency by method.", ["method"],
                        buckets=LATENCY_BUCKETS)
RETRIEVE_LATENCY = Histogram("tandem_retrieve_latency_seconds", "Retriever service latency by source.",
                             ["source"], buckets=LATENCY_BUCKETS)
SEARCH_CACHE_HITS = Counter("tandem_search_cache_hits_total", "Searches answered from the result cache.")
SEARCH_DEGRADED = Counter("tandem_search_degraded_total", "Searches answered with a source missing.", ["source"])
BATCH_SIZE = Histogram("tandem_batch_size", "Queries per micro-batch sent to a retriever.", ["source"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))

# Feedback, counted by the gateway's FeedbackService once per event id and per request
# (tandem_services.feedback.FeedbackCounts). CTR of an arm over split traffic:
#   sum by (arm) (rate(tandem_arm_clicked_requests_total[15m]))
#     / sum by (arm) (rate(tandem_arm_feedback_requests_total[15m]))
FEEDBACK_EVENTS = Counter("tandem_feedback_events_total", "Feedback events accepted, by the hit's arm and kind.",
                          ["arm", "kind"])
ARM_FEEDBACK_REQUESTS = Counter("tandem_arm_feedback_requests_total",
                                "Split requests per arm whose feedback arrived (the CTR's denominator).", ["arm"])
ARM_CLICKED_REQUESTS = Counter("tandem_arm_clicked_requests_total",
                               "Split requests per arm with at least one click (the CTR's numerator).", ["arm"])
