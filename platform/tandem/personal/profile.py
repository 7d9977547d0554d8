"""A user's behaviour profile: decayed item vectors and ID-prefix weights, and its codec.

Every click or purchase adds ``w · v_item`` to the profile vector and ``w`` to the weight
of each of the item's top ID prefixes (``"44"``, ``"44/2"``: levels 1..``prefix_levels``),
where ``w`` is the kind's weight (a purchase counts more than a click). Before each update
everything already in the profile is multiplied by ``0.5 ** (Δt / half_life_s)``, so old
interests fade; readers apply the same decay up to "now". Only the ``max_prefixes``
heaviest prefixes are kept and the last ``max_events`` event ids (a replayed Kafka batch
changes nothing), so a profile has a bounded size whatever the user does.

Stored as compact JSON (``tandem.personal.profile/1``), the vector as base64 float32.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tandem.errors import CorruptArtifact, InvalidInput

FORMAT = "tandem.personal.profile/1"


class ProfileConfig(BaseModel):
    """How profiles are built and kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_s: float = Field(default=7 * 86400.0, gt=0)
    """Time for an interaction's weight to halve."""
    ttl_s: float = Field(default=30 * 86400.0, gt=0)
    """A profile nobody updated for this long is dropped by the store (Redis ``EX``)."""
    click_weight: float = Field(default=1.0, ge=0)
    purchase_weight: float = Field(default=3.0, ge=0)
    prefix_levels: int = Field(default=2, ge=1, le=8)
    """ID levels whose prefixes are tracked (1 = top cluster only)."""
    max_prefixes: int = Field(default=32, ge=1, le=1024)
    max_events: int = Field(default=64, ge=1, le=4096)
    """Recent event ids remembered per profile, to drop replayed duplicates."""
    max_users: int = Field(default=100_000, ge=1)
    """Capacity of the in-process store (least recently used users go first)."""

    def kind_weight(self, kind: str) -> float:
        """Weight of one event of ``kind`` (0 for impressions: seeing is not interest)."""
        return {"click": self.click_weight, "purchase": self.purchase_weight}.get(kind, 0.0)


def prefix_keys(codes: Sequence[int], levels: int) -> list[str]:
    """``["44", "44/2"]`` for codes ``(44, 2, 0)`` and 2 levels."""
    return ["/".join(str(int(c)) for c in codes[: n + 1]) for n in range(min(levels, len(codes)))]


@dataclass
class UserProfile:
    """One user's decayed interests (see the module docstring)."""

    vector: np.ndarray
    weight: float = 0.0
    prefixes: dict[str, float] = field(default_factory=dict)
    ts: float = 0.0
    events: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, dim: int) -> UserProfile:
        """A profile with no interaction yet."""
        return cls(np.zeros(dim, dtype=np.float32))

    def decay_to(self, now: float, half_life_s: float) -> None:
        """Fade everything to time ``now`` (a ``now`` before :attr:`ts` changes nothing)."""
        if self.ts and now > self.ts:
            f = 0.5 ** ((now - self.ts) / half_life_s)
            self.vector *= np.float32(f)
            self.weight *= f
            self.prefixes = {k: v * f for k, v in self.prefixes.items()}
        self.ts = max(self.ts, now)

    def add(self, event_id: str, vector: np.ndarray, codes: Sequence[int], weight: float, ts: float,
            config: ProfileConfig) -> bool:
        """Fold one interaction in; ``False`` (nothing changed) for a repeated ``event_id`` or weight 0."""
        if weight <= 0 or event_id in self.events:
            return False
        if vector.shape != self.vector.shape:
            raise InvalidInput(f"item vector has shape {vector.shape}, the profile {self.vector.shape}")
        # An event older than the profile is folded in with its own age's weight.
        age = max(0.0, self.ts - ts) if self.ts else 0.0
        self.decay_to(ts, config.half_life_s)
        w = weight * 0.5 ** (age / config.half_life_s)
        self.vector += np.float32(w) * vector.astype(np.float32)
        self.weight += w
        for key in prefix_keys(codes, config.prefix_levels):
            self.prefixes[key] = self.prefixes.get(key, 0.0) + w
        if len(self.prefixes) > config.max_prefixes:
            self.prefixes = dict(sorted(self.prefixes.items(), key=lambda kv: -kv[1])[: config.max_prefixes])
        self.events = (self.events + [event_id])[-config.max_events:]
        return True

    def unit(self) -> np.ndarray | None:
        """The profile direction (unit vector), ``None`` when empty."""
        n = float(np.linalg.norm(self.vector))
        return None if n == 0 or not math.isfinite(n) else self.vector / n

    def prefix_share(self, key: str) -> float:
        """Share of the profile's weight on ID prefix ``key`` (0..1)."""
        return self.prefixes.get(key, 0.0) / self.weight if self.weight > 0 else 0.0

    def to_bytes(self) -> bytes:
        """The stored form (module docstring)."""
        body = {"format": FORMAT, "dim": int(self.vector.shape[0]),
                "vector": base64.b64encode(self.vector.astype("<f4").tobytes()).decode("ascii"),
                "weight": self.weight, "prefixes": self.prefixes, "ts": self.ts, "events": self.events}
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes | str) -> UserProfile:
        """Inverse of :meth:`to_bytes`; :class:`CorruptArtifact` naming what is wrong."""
        try:
            d = json.loads(data)
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise CorruptArtifact(f"not a {FORMAT} profile")
            vec = np.frombuffer(base64.b64decode(d["vector"]), dtype="<f4").astype(np.float32)
            if vec.shape != (int(d["dim"]),) or not np.all(np.isfinite(vec)):
                raise CorruptArtifact(f"profile vector has {vec.size} values, `dim` says {d['dim']}")
            return cls(vec, float(d["weight"]), {str(k): float(v) for k, v in d["prefixes"].items()},
                       float(d["ts"]), [str(e) for e in d["events"]])
        except CorruptArtifact:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArtifact(f"profile is unreadable: {type(exc).__name__}: {exc}"[:300]) from None
