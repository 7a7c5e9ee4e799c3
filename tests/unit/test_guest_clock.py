"""Guest clocks across a suspend/restore: the lag is measured, going backwards fails."""

import os
import subprocess

import pytest

from bhyve_snaptest.scenario import GuestClock, clock_change, clock_command, parse_clock
from tests.unit.freebsd_userland import STANDINS


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


def _freebsd_like(tmp_path):
    """A PATH with FreeBSD's sysctl; /proc/uptime is named by a path that does not exist."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sysctl").write_text(STANDINS["sysctl"])
    (shim / "sysctl").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}


def test_the_clock_is_read_on_a_guest_without_proc(tmp_path):
    """Without /proc the old command exited 1 (cut on a missing file); the new one reads
    FreeBSD's boot time."""
    env, missing = _freebsd_like(tmp_path), str(tmp_path / "no-proc" / "uptime")
    old = f"date +%s; cut -d ' ' -f 1 {missing} 2>/dev/null"
    assert subprocess.run(["sh", "-c", old], env=env, check=False).returncode == 1
    result = subprocess.run(["sh", "-c", clock_command(missing)], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    clock = parse_clock(result.stdout, 0.0)
    assert 119 <= clock.guest_uptime <= 121


def test_linux_uptime_and_a_missing_one():
    assert parse_clock("1700000000\n123.45\n", 1.0) == GuestClock(1.0, 1700000000, 123.45)
    assert parse_clock("1700000000\n", 1.0).guest_uptime is None
    real = subprocess.run(["sh", "-c", clock_command()], capture_output=True, text=True,
                          check=True).stdout
    assert parse_clock(real, 0.0).guest_uptime > 0
