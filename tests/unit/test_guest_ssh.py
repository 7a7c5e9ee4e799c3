"""No guest SSH call outlives its timeout: silent servers and hung commands are bounded.

An in-process paramiko server stands in for the guest's sshd: it accepts the harness's
key, runs ``echo`` commands, and never answers a ``hang`` command.
"""

import socket
import threading
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fixtures.errors import GuestError, GuestTimeout
from fixtures.guest import GuestShell, SSHEndpoint


@pytest.fixture(scope="module")
def client_key(tmp_path_factory):
    path = tmp_path_factory.mktemp("key") / "id_ed25519"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    return path


class _Guest(paramiko.ServerInterface):
    def __init__(self, allowed: paramiko.PKey) -> None:
        self.allowed = allowed
        self.commands: list[tuple[paramiko.Channel, bytes]] = []
        self.ready = threading.Event()

    def check_auth_publickey(self, username, key):
        ok = username == "root" and key.asbytes() == self.allowed.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        self.commands.append((channel, command))
        self.ready.set()
        return True


def _serve(listener: socket.socket, server: _Guest) -> None:
    conn, _ = listener.accept()
    transport = paramiko.Transport(conn)
    transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(server.host_key))
    transport.start_server(server=server)
    while transport.is_active():
        if not server.ready.wait(0.1):
            continue
        server.ready.clear()
        channel, command = server.commands[-1]
        if command.startswith(b"echo "):
            channel.sendall(command[5:] + b"\n")
            channel.send_exit_status(0)
            channel.close()
        elif command.startswith(b"exit "):
            channel.send_exit_status(int(command[5:]))
            channel.close()
        # "hang": never answer


@pytest.fixture
def fake_guest(client_key):
    listener = socket.create_server(("127.0.0.1", 0))
    server = _Guest(paramiko.Ed25519Key.from_private_key_file(str(client_key)))
    server.host_key = str(client_key)  # any ed25519 key will do as a host key here
    threading.Thread(target=_serve, args=(listener, server), daemon=True).start()
    yield SSHEndpoint("127.0.0.1", listener.getsockname()[1], "root", client_key)
    listener.close()


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
