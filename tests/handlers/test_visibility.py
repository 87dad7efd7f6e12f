"""History visibility, worked out from the spec's five rules (not from the code)."""

from __future__ import annotations

from cis.handlers.visibility import Change, VisibilityTimeline, allowed

U = "@u:x"


def msg(timeline: VisibilityTimeline, position: int) -> bool:
    return timeline.can_see(position, "m.room.message", None, U)


def test_rules_table() -> None:
    assert allowed("world_readable", None, False)  # rule 1
    assert allowed("joined", "join", False)  # rule 2
    assert allowed("shared", None, True)  # rule 3
    assert not allowed("shared", None, False)
    assert allowed("invited", "invite", False)  # rule 4
    assert not allowed("joined", "invite", False)
    assert not allowed("joined", "leave", True)  # rule 3 is for shared only
    assert not allowed("invited", "leave", True)


def test_shared_lets_a_later_joiner_see_earlier_history() -> None:
    t = VisibilityTimeline([Change(10, "join")], [Change(1, "shared")])
    assert msg(t, 5)
    assert msg(t, 15)


def test_joined_hides_history_before_the_join() -> None:
    t = VisibilityTimeline([Change(10, "join")], [Change(1, "joined")])
    assert not msg(t, 5)
    assert msg(t, 11)
    # The user's own join event is visible (membership after it is join).
    assert t.can_see(10, "m.room.member", U, U)
    # Someone else's member event at the same spot is not.
    assert not t.can_see(9, "m.room.member", "@v:x", U)


def test_invited_shows_from_the_invite() -> None:
    t = VisibilityTimeline([Change(5, "invite"), Change(10, "join")], [Change(1, "invited")])
    assert not msg(t, 3)
    assert msg(t, 7)  # membership invite, visibility invited
    assert msg(t, 12)


def test_after_leaving_nothing_new_is_visible() -> None:
    t = VisibilityTimeline([Change(5, "join"), Change(20, "leave")], [Change(1, "joined")])
    assert msg(t, 10)
    assert not msg(t, 25)
    # Their own leave event: membership before it was join.
    assert t.can_see(20, "m.room.member", U, U)


def test_shared_after_leaving_only_history_before_a_later_join() -> None:
    t = VisibilityTimeline([Change(5, "join"), Change(20, "leave")], [Change(1, "shared")])
    assert msg(t, 2)  # joined after it
    assert not msg(t, 25)  # after leaving, never rejoined


def test_world_readable_needs_no_membership() -> None:
    t = VisibilityTimeline([], [Change(1, "shared"), Change(10, "world_readable")])
    assert not msg(t, 5)
    assert msg(t, 15)
    # The change itself: visible because the visibility after it allows.
    assert t.can_see(10, "m.room.history_visibility", "", U)


def test_default_and_unknown_visibility_are_shared() -> None:
    assert msg(VisibilityTimeline([Change(9, "join")], []), 3)
    assert msg(VisibilityTimeline([Change(9, "join")], [Change(1, "bogus")]), 3)


def test_filter_positions() -> None:
    t = VisibilityTimeline([Change(10, "join")], [Change(1, "joined")])
    assert t.filter_positions([(5, "m.room.message", None), (11, "m.room.message", None)], U) == [
        False,
        True,
    ]
