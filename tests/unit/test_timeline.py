"""A test's timeline: phases on the host's clock, notes, and guest time mapped onto it."""

import pytest

from bhyve_snaptest.timeline import ClockPair, Span, Timeline


def test_a_phase_is_timed_told_and_kept_with_its_note():
    heard = []
    timeline = Timeline(listeners=[heard.append])
    with timeline.span("suspend") as note:
        note.append("(242 MB)")
    (span,) = timeline.spans
    assert span.kind == "suspend" and span.note == "(242 MB)"
    assert 0 <= span.start_s <= span.end_s
    assert heard == [f"suspend {span.duration_s:.1f} s (242 MB)"]


def test_a_phase_that_raised_is_kept_so_the_bar_shows_where_the_test_stopped():
    timeline = Timeline()
    with pytest.raises(TimeoutError), timeline.span("restore", "restore #2"):
        raise TimeoutError("restore hung")
    assert [s.name for s in timeline.spans] == ["restore #2"]


def test_an_unknown_phase_kind_is_refused():
    with pytest.raises(ValueError, match="unknown phase kind 'resume'"), \
            Timeline().span("resume"):
        pass


def test_notes_are_told_as_they_are():
    heard = []
    timeline = Timeline(listeners=[heard.append])
    timeline.note("copy 12% at suspend")
    assert heard == ["copy 12% at suspend"]
    assert timeline.notes[0].text == "copy 12% at suspend"


def test_guest_time_is_placed_by_the_last_clock_reading_before_it():
    # Before the suspend the guest's clock runs with the host's; across the 7 s it was
    # suspended it advanced 1 s only.
    timeline = Timeline(clocks=[ClockPair(44.0, 1000, "before suspend 1"),
                                ClockPair(52.0, 1001, "after restore 1")])
    assert timeline.host_time(990) == 34.0   # before the first reading: its offset
    assert timeline.host_time(1000) == 44.0
    assert timeline.host_time(1001) == 52.0
    assert timeline.host_time(1010) == 61.0
    assert Timeline().host_time(1000) is None


def test_the_timeline_survives_metrics_json():
    timeline = Timeline(origin_wall=1796427741.842,
                        spans=[Span("boot", "boot", 0.04, 12.01)],
                        clocks=[ClockPair(44.9, 1796427786, "before suspend 1")])
    timeline.note("verdicts copy PASS")
    again = Timeline.from_dict(timeline.as_dict())
    assert again.spans == timeline.spans and again.clocks == timeline.clocks
    assert again.notes == timeline.notes and again.origin_wall == 1796427741.842
