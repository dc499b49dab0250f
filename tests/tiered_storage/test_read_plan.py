"""The read-through decision table: never a corrupt copy, global is the source of truth."""

from __future__ import annotations

from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from tiered_storage import plan_read
from tiered_storage._read_plan import Answer, plan_region_only

ASKED = [a for a in get_args(Answer) if a != "skipped"]
answers = st.sampled_from(ASKED)


@given(answers, answers)
def test_serves_only_a_good_copy(region: Answer, global_: Answer) -> None:
    plan = plan_read(region, global_)
    assert (plan.serve == "region") == (region == "hit")
    if plan.serve == "global":
        assert global_ == "hit"
    assert bool(plan.serve) != bool(plan.error)  # bytes or an error, never both, never neither


@given(answers, answers)
def test_fills_and_drops(region: Answer, global_: Answer) -> None:
    plan = plan_read(region, global_)
    assert plan.fill == (region in ("miss", "corrupt") and global_ == "hit")
    assert plan.drop == (region == "corrupt")


@given(answers, answers)
def test_not_found_only_when_global_says_so(region: Answer, global_: Answer) -> None:
    plan = plan_read(region, global_)
    if region != "hit":
        assert (plan.error == "not_found") == (global_ == "miss")
        assert (plan.error == "unavailable") == (global_ == "down")


@given(answers)
def test_region_first(region: Answer) -> None:
    first = plan_read(region, "skipped")
    assert not first.error  # before global answered nothing is final, except a region hit
    assert first.serve == ("region" if region == "hit" else "")


@given(answers)
def test_region_alone_is_the_source_of_truth(region: Answer) -> None:
    plan = plan_region_only(region)
    assert plan.serve == ("region" if region == "hit" else "")
    assert (plan.error == "not_found") == (region == "miss")
    assert plan.drop == (region == "corrupt") and not plan.fill
