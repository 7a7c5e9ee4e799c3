"""Stand-ins shared by the unit tests.

``fake_guest`` is an in-process paramiko server standing in for the guest's sshd: it accepts
the harness's key, answers ``echo TEXT`` and ``exit N``, and never answers ``hang``.
``drop`` closes the whole connection under the command; ``drop-once`` does that the first
time it is run (in any connection) and answers ``ok`` after. It counts connections.
"""

import socket
import threading

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bhyve_snaptest.drivers.base import HostSettings
from bhyve_snaptest.guest import SSHEndpoint
from tests.unit.standins import executable as standin_executable


@pytest.fixture(scope="session")
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


class GuestStats:
    """What the fake guest saw, across its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.dropped_once = False


def _serve(listener: socket.socket, key_file: str, stats: GuestStats) -> None:
    """Accept connections until the listener closes; one thread and server per connection."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        stats.connections += 1
        threading.Thread(target=_session, args=(conn, key_file, stats), daemon=True).start()


def _session(conn: socket.socket, key_file: str, stats: GuestStats) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(key_file)
    server = _Guest(key)
    transport = paramiko.Transport(conn)
    transport.add_server_key(key)  # any ed25519 key will do as a host key here
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
        elif command == b"drop" or (command == b"drop-once" and not stats.dropped_once):
            stats.dropped_once = True
            transport.close()
        elif command == b"drop-once":
            channel.sendall(b"ok\n")
            channel.send_exit_status(0)
            channel.close()
        # "hang": never answer


@pytest.fixture
def fake_guest_stats():
    return GuestStats()


@pytest.fixture
def fake_guest(client_key, fake_guest_stats):
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(listener, str(client_key), fake_guest_stats),
                     daemon=True).start()
    yield SSHEndpoint("127.0.0.1", listener.getsockname()[1], "root", client_key)
    listener.close()




@pytest.fixture(autouse=True)
def private_state_root(tmp_path_factory, monkeypatch):
    """Each unit test keeps ledgers and reservations in a state directory of its own,
    never in the host's, where real runs keep theirs."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(state))
    return state


@pytest.fixture
def freebsd_host(tmp_path, monkeypatch):
    """A FreeBSD host as far as the host checks can tell (uname, uid 0, kldstat, sysctl
    kern.conftxt with BHYVE_SNAPSHOT, firmware): a function of a stand-in personality
    returning HostSettings for the bhyve and bhyvectl stand-ins. Not FreeBSD."""
    bin_dir = tmp_path / "freebsd-bin"
    bin_dir.mkdir()
    (bin_dir / "kldstat").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sysctl").write_text('#!/bin/sh\nprintf "%s\\n" "$STANDIN_CONFTXT"\n')
    for tool in ("kldstat", "sysctl"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr("platform.system", lambda: "FreeBSD")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("STANDIN_CONFTXT", "options\tBHYVE_SNAPSHOT\ndevice\tif_bridge\n"
                                          "device\ttuntap\n")
    firmware = tmp_path / "BHYVE_UEFI.fd"
    firmware.write_bytes(b"")
    for variable, directory in (("BHYVE_EMULATION_VMM_DIR", "vmm"),
                                ("BHYVE_EMULATION_RUN_DIR", "run")):
        (tmp_path / directory).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / directory))

    def settings(personality: str, **more) -> HostSettings:
        monkeypatch.setenv("BHYVE_EMULATION_PERSONALITY", personality)
        return HostSettings(bhyve_binary=standin_executable(tmp_path, "bhyve"),
                            bhyvectl_binary=standin_executable(tmp_path, "bhyvectl"),
                            firmware_code=firmware, bhyve_run_dir=tmp_path / "run", **more)
    return settings
