"""When to give pad, to whom, and how much: the automatic giving policy. Pure.

`listen`, `chat` and `web` run it after each message (`Member.auto_give`); the figures
are each member's as this member knows them (`usage.MemberUsage`: exact for itself, a
bound for the others from what it accepted). In short: a member gives part of its
unused pad to the member who is shortest of what it will likely need, when it is the
member best placed to give, and never below what it will likely need itself.

- **Likely need.** The group keeps talking as it has: each member will use a share of
  all the pad left that matches its share of the pad used so far (every member is
  credited with PRIOR_SHARE of the group pad to start with, so one early message does
  not decide). A member cannot use more than its masks allow: at most its keys left
  times its average message, with MASK_SLACK to spare.
- **Running low.** A member holds less than LOW_SHARE of its likely need, still has
  masks, and has no outstanding grant from this member (below).
- **Reserve.** A donor keeps RESERVE_FACTOR times its own likely need, plus
  FLOOR_MESSAGES messages of its own average size, whatever the figures say. Only what
  is above that, its surplus, can be given.
- **One donor at a time.** Every member that sees a member running low works out, from
  its own figures, which member has the largest surplus (ties: the lowest index), and
  only that one gives. Each member's figures of the others are bounds that err on the
  side of "they have more" (a message not yet seen has not been counted), so two
  members rarely both find themselves best placed; when they do, the grantee simply
  gets pad twice, and gives nothing back.
- **One outstanding grant per recipient.** A grant of this member is *outstanding*
  until this member has accepted a message the grantee sealed inside the granted range
  (it has the grant and has begun to use it). While one is outstanding this member
  gives that member nothing more; another member may.
- **How much.** Enough to bring the recipient up to its likely need, at most the
  donor's surplus and the largest piece it can give (`granting.largest_gift`), rounded
  down to the length step; nothing when that is less than MIN_GIFT_MESSAGES of the
  recipient's messages (a grant costs a message itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .usage import MemberUsage

PRIOR_SHARE = 1 / 8  # of the group pad, split evenly, credited as used to start with
MASK_SLACK = 1.25
LOW_SHARE = 0.5
RESERVE_FACTOR = 1.25
FLOOR_MESSAGES = 4
MIN_GIFT_MESSAGES = 4


@dataclass(frozen=True)
class GiftPlan:
    to: int
    size: int


def likely_needs(members: Sequence[MemberUsage]) -> dict[int, float]:
    """Each member's likely need of pad from now on, by index (see the module docstring)."""
    group = sum(m.pad_size for m in members)
    prior = PRIOR_SHARE * group / len(members)
    weights = {m.index: m.bytes_used + prior for m in members}
    total_weight = sum(weights.values())
    left = sum(m.bytes_left for m in members)
    return {
        m.index: min(
            left * weights[m.index] / total_weight,
            m.keys_left * m.average_size * MASK_SLACK,
        )
        for m in members
    }


def surplus(member: MemberUsage, need: float) -> float:
    """What `member` holds beyond its reserve (negative: less than its reserve)."""
    return member.bytes_left - RESERVE_FACTOR * need - FLOOR_MESSAGES * member.average_size


def plan_gift(
    members: Sequence[MemberUsage],
    *,
    me: int,
    giftable: int,
    outstanding: frozenset[int],
    step: int,
) -> GiftPlan | None:
    """The gift member `me` should make now, or None. `giftable`: the largest piece it
    can give; `outstanding`: members holding a grant of its not yet used."""
    needs = likely_needs(members)
    low = [
        m
        for m in members
        if m.index != me
        and m.index not in outstanding
        and m.keys_left > 0
        and m.bytes_left < LOW_SHARE * needs[m.index]
    ]
    if not low:
        return None
    # The member shortest of its need first.
    recipient = min(low, key=lambda m: (m.bytes_left / needs[m.index], m.index))
    donors = [m for m in members if m.index != recipient.index]
    best = max(donors, key=lambda m: (surplus(m, needs[m.index]), -m.index))
    if best.index != me:
        return None
    wanted = needs[recipient.index] - recipient.bytes_left
    size = int(min(wanted, surplus(best, needs[me]), giftable)) // step * step
    if size < MIN_GIFT_MESSAGES * recipient.average_size or size < 1:
        return None
    return GiftPlan(recipient.index, size)
