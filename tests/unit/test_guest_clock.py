"""Guest clocks across a suspend/restore: the lag is measured, going backwards fails."""

import pytest

from fixtures.scenario import GuestClock, clock_change


def test_a_guest_that_slept_through_the_suspend_lags_the_host():
    before = GuestClock(host_wall=1000.0, guest_wall=500, guest_uptime=30.0)
    after = GuestClock(host_wall=1010.5, guest_wall=503, guest_uptime=32.75)
    assert clock_change(before, after) == {"guest_clock_lag_s": 7.5,
                                           "guest_uptime_advance_s": 2.75,
                                           "host_elapsed_s": 10.5}


def test_a_wall_clock_going_backwards_fails():
    with pytest.raises(AssertionError, match="wall clock went back from 500 to 499"):
        clock_change(GuestClock(0.0, 500, None), GuestClock(5.0, 499, None))


def test_uptime_going_backwards_fails_and_missing_uptime_is_reported_as_none():
    with pytest.raises(AssertionError, match="uptime went back"):
        clock_change(GuestClock(0.0, 500, 30.0), GuestClock(5.0, 501, 29.0))
    assert clock_change(GuestClock(0.0, 500, None),
                        GuestClock(5.0, 501, None))["guest_uptime_advance_s"] is None
