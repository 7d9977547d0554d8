"""Learning from failed queries (issue 22, item 2).

The gateway reports searches that failed the user — no hits, a low best score, or hits shown
and none clicked — as :class:`~tandem.failed.events.FailedQuery` records on
``tandem.failed-queries``. The pipeline step groups them by normalised text, diagnoses each
group against the catalog vocabulary (:mod:`tandem.failed.diagnose`: misspelling →
correction, unknown term → nearest catalog terms, vocabulary gap → the items the same user
clicked later in the session) and writes corrective query → item samples for the hourly
adapter plus a corrections table and a report (:mod:`tandem.failed.cycle`).
"""

from tandem.failed.diagnose import Diagnosis, Vocabulary, diagnose
from tandem.failed.events import FAILED_TOPIC, REASONS, FailedQuery, decode_failed, encode_failed, failure_reason

__all__ = ["FAILED_TOPIC", "REASONS", "Diagnosis", "FailedQuery", "Vocabulary", "decode_failed", "diagnose",
           "encode_failed", "failure_reason"]
