"""Feedback events (impressions, clicks, purchases): validation, the Kafka codec, the local
store the pipelines and the canary controller read, and the replay from Kafka into it.

Importing this package does not import kafka-python; the sinks and the consumer load it.
"""

from tandem.feedback.events import (
    ARMS,
    KINDS,
    FeedbackError,
    FeedbackEvent,
    FeedbackReason,
    decode_feedback,
    encode_feedback,
    validate_feedback,
)
from tandem.feedback.store import FeedbackStore

__all__ = [
    "ARMS", "KINDS", "FeedbackError", "FeedbackEvent", "FeedbackReason", "FeedbackStore", "decode_feedback",
    "encode_feedback", "validate_feedback",
]
