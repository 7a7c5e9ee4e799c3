"""No guest SSH call outlives its timeout: silent servers and hung commands are bounded.

``fake_guest`` (conftest.py) stands in for the guest's sshd.
"""

import itertools
import socket
import threading
import time

import pytest

from bhyve_snaptest.errors import GuestError, GuestTimeout
from bhyve_snaptest.guest import SSH_RETRIES, GuestShell, SSHEndpoint


def test_commands_return_output_and_exit_status(fake_guest):
    shell = GuestShell(fake_guest)
    shell.connect(timeout=20)
    assert shell.check_output("echo hello", timeout=10) == "hello\n"
    result = shell.run("exit 3", timeout=10)
    assert result.exit_status == 3 and not result.succeeded
    with pytest.raises(GuestError, match="exit status 3"):
        shell.check_output("exit 3", timeout=10)
    shell.close()


def test_a_hung_command_times_out_and_drops_the_connection(fake_guest):
    shell = GuestShell(fake_guest)
    shell.connect(timeout=20)
    start = time.monotonic()
    with pytest.raises(GuestTimeout, match="timed out after 1 s: hang"):
        shell.run("hang", timeout=1.0)
    assert time.monotonic() - start < 3
    assert not shell.connected


def test_a_silent_server_cannot_hold_connect_past_its_timeout(client_key):
    """Like QEMU's user-network port forward before sshd is up: TCP accepts, no banner."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    shell = GuestShell(SSHEndpoint("127.0.0.1", listener.getsockname()[1], "root", client_key))
    start = time.monotonic()
    with pytest.raises(GuestTimeout, match="no SSH connection"):
        shell.connect(timeout=2.0)
    assert time.monotonic() - start < 5
    listener.close()


def test_connect_gives_up_at_once_when_the_vm_is_gone(client_key):
    shell = GuestShell(SSHEndpoint("127.0.0.1", 9, "root", client_key))
    start = time.monotonic()
    with pytest.raises(GuestError, match="hypervisor ended"):
        shell.connect(timeout=60, alive=lambda: False)
    assert time.monotonic() - start < 2


def test_connect_retries_soon_at_first_and_backs_off_to_half_a_second(client_key,
                                                                      monkeypatch):
    attempts = []

    def refused(timeout):
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("not yet")

    shell = GuestShell(SSHEndpoint("127.0.0.1", 9, "root", client_key))
    monkeypatch.setattr(shell, "_connect_once", refused)
    with pytest.raises(GuestTimeout, match="not yet"):
        shell.connect(timeout=2.5)
    pauses = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert pauses[0] < 0.2, pauses
    assert pauses[:4] == sorted(pauses[:4]), pauses
    assert max(pauses) < 0.7, pauses
    assert len(attempts) >= 7, "0.05 + 0.1 + 0.2 + 0.4 + 0.5 ... within 2.5 s"


def test_run_without_connection_is_an_error(client_key):
    shell = GuestShell(SSHEndpoint("127.0.0.1", 9, "root", client_key))
    with pytest.raises(GuestError, match="not connected"):
        shell.run("true")


def _shell(endpoint: SSHEndpoint) -> GuestShell:
    shell = GuestShell(endpoint, console_tail=lambda: "--- console ---\nlast words")
    shell.connect(timeout=20)
    return shell


def test_an_idempotent_command_is_run_again_after_a_drop(fake_guest, fake_guest_stats):
    shell = _shell(fake_guest)
    assert shell.check_output("drop-once", timeout=10, idempotent=True) == "ok\n"
    assert fake_guest_stats.connections == 2
    shell.close()


def test_a_command_that_may_have_run_is_not_run_twice(fake_guest, fake_guest_stats):
    shell = _shell(fake_guest)
    with pytest.raises(GuestError, match="not run again: it may have run already") as failure:
        shell.run("drop-once", timeout=10)
    assert "last words" in str(failure.value), "the console tail belongs in the error"
    assert fake_guest_stats.connections == 1


def test_a_dropped_connection_is_reconnected_before_the_next_command(fake_guest,
                                                                     fake_guest_stats):
    shell = _shell(fake_guest)
    shell.close()  # as if the connection had dropped between two commands
    assert shell.check_output("echo again", timeout=10) == "again\n"
    assert fake_guest_stats.connections == 2


def test_reconnects_are_bounded_and_the_give_up_names_the_console(fake_guest,
                                                                  fake_guest_stats):
    shell = _shell(fake_guest)
    with pytest.raises(GuestError, match=f"gave up after {SSH_RETRIES} reconnects") as failure:
        shell.run("drop", timeout=10, idempotent=True)
    assert "last words" in str(failure.value)
    assert fake_guest_stats.connections == 1 + SSH_RETRIES


def test_a_reconnect_to_a_dead_vm_gives_up_at_once(fake_guest):
    alive = [True]
    shell = GuestShell(fake_guest, alive=lambda: alive[0],
                       console_tail=lambda: "Kernel panic - not syncing")
    shell.connect(timeout=20)
    alive[0] = False
    start = time.monotonic()
    with pytest.raises(GuestError, match=r"reconnecting failed.*hypervisor ended") as failure:
        shell.run("drop", timeout=10, idempotent=True)
    assert time.monotonic() - start < 5
    assert "Kernel panic" in str(failure.value)
