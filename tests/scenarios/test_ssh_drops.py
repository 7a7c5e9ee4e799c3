"""SSH drops in a real guest: reconnected within bounds, reported with the console tail.

The guest's SSH server process for the session is killed from inside the command
(``kill -9 $PPID``: the shell's parent is the per-connection server, dropbear or sshd), so
the connection drops while the command runs, as it would if the guest's network hiccuped.
"""

import pytest

from bhyve_snaptest.errors import GuestError
from bhyve_snaptest.guest import SSH_RETRIES

pytestmark = [pytest.mark.scenario, pytest.mark.selftest]

#: Drops its own connection the first time only (a flag file in the guest says it did).
DROP_ONCE = ("[ -e /tmp/snaptest-dropped ] || { touch /tmp/snaptest-dropped; kill -9 $PPID; "
             "sleep 5; }; echo answered")
DROP_ALWAYS = "kill -9 $PPID; sleep 5; echo never"


def test_a_read_survives_a_dropped_connection(vm_booted):
    """An idempotent command whose connection drops is run again and answers."""
    vm = vm_booted
    assert vm.guest.check_output(DROP_ONCE, timeout=60, idempotent=True) == "answered\n"
    assert vm.guest.check_output("cat /tmp/snaptest-dropped && echo flag", timeout=30) == \
        "flag\n", "the first attempt ran and dropped"


def test_a_command_that_may_have_run_is_not_repeated(vm_booted):
    """A command that is not idempotent is not run twice; the error says why."""
    vm = vm_booted
    with pytest.raises(GuestError, match="not run again: it may have run already"):
        vm.guest.run(DROP_ONCE, timeout=60)
    assert vm.guest.check_output("echo still-there", timeout=30) == "still-there\n"


def test_ssh_gives_up_after_bounded_reconnects_with_the_console_tail(vm_booted):
    """A drop every time: bounded reconnects, then a GuestError with the console tail."""
    vm = vm_booted
    with pytest.raises(GuestError, match=f"gave up after {SSH_RETRIES} reconnects") as failure:
        vm.guest.run(DROP_ALWAYS, timeout=60, idempotent=True)
    assert "--- console ---" in str(failure.value)
    assert vm.process.alive, "the VM itself is fine: only SSH gave up"
