"""Team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): one list from two
rankers' lists, each item credited to the ranker ("team") that contributed it.

Each round the team with fewer picks so far (a coin flip on a tie) adds its best item not yet
in the list. Every user then compares both rankers on the same query, so a click on a team's
item is a vote for that team: far fewer queries detect a difference than comparing click
rates of two user groups (section 5.5's A/B plan; ``bench.canary`` measures both).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

TEAM_A = "a"
TEAM_B = "b"


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> list[tuple[str, str]]:
    """Interleave ranked item ids ``a`` and ``b`` into at most ``k`` ``(item_id, team)`` pairs.

    ``rng`` decides ties; seed it from the request id so a response can be rebuilt.
    Duplicates within one list are skipped; an item both lists hold goes to whichever team
    picks it first.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    ia = ib = 0
    picks = {TEAM_A: 0, TEAM_B: 0}
    while len(out) < k:
        while ia < len(a) and a[ia] in seen:
            ia += 1
        while ib < len(b) and b[ib] in seen:
            ib += 1
        a_left, b_left = ia < len(a), ib < len(b)
        if not a_left and not b_left:
            break
        if a_left and (not b_left or picks[TEAM_A] < picks[TEAM_B]
                       or (picks[TEAM_A] == picks[TEAM_B] and rng.random() < 0.5)):
            team, item = TEAM_A, a[ia]
        else:
            team, item = TEAM_B, b[ib]
        out.append((item, team))
        seen.add(item)
        picks[team] += 1
    return out


def credit(teams: Mapping[str, str], clicked: Iterable[str]) -> tuple[int, int]:
    """Clicks on team A's and team B's items (``teams``: item_id → team); others are ignored."""
    wins = {TEAM_A: 0, TEAM_B: 0}
    for item in clicked:
        team = teams.get(item)
        if team in wins:
            wins[team] += 1
    return wins[TEAM_A], wins[TEAM_B]


def preference(teams: Mapping[str, str], clicked: Iterable[str]) -> int:
    """+1 when B's items got more clicks, -1 when A's did, 0 on a tie (no clicks included)."""
    ca, cb = credit(teams, clicked)
    return (cb > ca) - (ca > cb)
