"""What a read through the region and global tiers does, as a pure decision table.

A region reads its own replica first.  Each tier's answer is one of:

* ``hit``: the store had the object and its bytes matched the expected SHA-256 (or none was
  expected);
* ``corrupt``: the store had bytes that did not match;
* ``miss``: the store answered that it has no such object;
* ``down``: the store could not be asked (Unavailable);
* ``skipped``: not asked (global, after a region hit; or there is no global tier).

The global store is the source of truth: its ``miss`` is authoritative (NotFound), a region
``miss`` is not.  A corrupt copy is never served: a corrupt region copy is dropped and the
object fetched again from global; a corrupt global copy is an error (Unavailable: a later read
may get good bytes; the region is not filled with bad ones).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Answer", "ReadPlan", "plan_read"]

Answer = Literal["hit", "corrupt", "miss", "down", "skipped"]


class ReadPlan(msgspec.Struct, frozen=True, kw_only=True):
    serve: Literal["region", "global", ""] = ""  # which tier's bytes the caller gets ("" = none)
    fill: bool = False  # write global's bytes into the region
    drop: bool = False  # delete the region's corrupt copy
    error: Literal["not_found", "unavailable", "corrupt", ""] = ""


def plan_read(region: Answer, global_: Answer) -> ReadPlan:
    """What to do once the region answered ``region`` and global answered ``global_``.

    Call it with ``global_="skipped"`` first: when that plan serves nothing and has no error,
    ask global and call it again with global's answer.
    """
    drop = region == "corrupt"
    if region == "hit":
        return ReadPlan(serve="region")
    if global_ == "skipped":
        # Nothing to serve from the region; no global tier either when the caller asks again.
        return ReadPlan(drop=drop)
    if global_ == "hit":
        return ReadPlan(serve="global", fill=region != "down", drop=drop)
    if global_ == "miss":
        return ReadPlan(drop=drop, error="not_found")
    if global_ == "corrupt":
        return ReadPlan(drop=drop, error="corrupt")
    return ReadPlan(drop=drop, error="unavailable")  # global down


def plan_region_only(region: Answer) -> ReadPlan:
    """No global tier: the region is the source of truth."""
    if region == "hit":
        return ReadPlan(serve="region")
    if region == "miss":
        return ReadPlan(error="not_found")
    if region == "corrupt":
        return ReadPlan(drop=True, error="corrupt")
    return ReadPlan(error="unavailable")
