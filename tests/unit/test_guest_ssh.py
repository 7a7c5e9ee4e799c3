"""No guest SSH call outlives its timeout: silent servers and hung commands are bounded.

``fake_guest`` (conftest.py) stands in for the guest's sshd.
"""

import socket
import threading
import time

import pytest

from fixtures.errors import GuestError, GuestTimeout
from fixtures.guest import GuestShell, SSHEndpoint


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


def test_run_without_connection_is_an_error(client_key):
    shell = GuestShell(SSHEndpoint("127.0.0.1", 9, "root", client_key))
    with pytest.raises(GuestError, match="not connected"):
        shell.run("true")
