"""bhyve networking, with ifconfig and sysctl (FreeBSD) or ip (Linux, the emulated bhyve)
replaced by a recorder: each interface is in the ledger before it exists, and what it
created goes at teardown."""

import pytest

from bhyve_snaptest import network
from bhyve_snaptest.commands import CommandResult
from bhyve_snaptest.errors import HarnessError
from bhyve_snaptest.ledger import Ledger, read_ledger
from bhyve_snaptest.network import TapNetwork
from bhyve_snaptest.reservations import HostInterfaces, reserve_subnet


class FakeHost:
    """ifconfig and sysctl, or ip: records each command with what the ledger held at that
    moment, and keeps the set of interfaces that exist."""

    def __init__(self, ledger: Ledger, existing: set[str] = frozenset()) -> None:
        self.ledger = ledger
        self.interfaces = set(existing)
        self.sysctl = "0"
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, argv, *, timeout, check=True, record=None):
        names = [e.get("name") for e in read_ledger(self.ledger.path)[1]]
        self.calls.append((" ".join(argv), names))
        status, out = 0, ""
        if argv[:1] == ["sysctl"]:
            if argv[1] == "-n":
                out = self.sysctl + "\n"
            else:
                self.sysctl = argv[1].split("=")[1]
        elif argv[-1] == "create" or argv[:3] in (["ip", "link", "add"],
                                                  ["ip", "tuntap", "add"]):
            name = argv[1] if argv[0] == "ifconfig" else argv[4 if argv[1] == "tuntap" else 3]
            if name in self.interfaces:
                status, out = 1, f"interface {name} already exists"
            self.interfaces.add(name)
        elif argv[-1] == "destroy" or argv[:3] == ["ip", "link", "delete"]:
            self.interfaces.discard(argv[1] if argv[0] == "ifconfig" else argv[3])
        return CommandResult(" ".join(argv), status, out, "", 0.0)


def _fake_host(tmp_path, monkeypatch, system):
    monkeypatch.setattr("platform.system", lambda: system)
    ledger = Ledger.open_new(tmp_path)
    fake = FakeHost(ledger)
    monkeypatch.setattr(network, "run_host", fake)
    return fake


@pytest.fixture
def freebsd(tmp_path, monkeypatch):
    fake = _fake_host(tmp_path, monkeypatch, "FreeBSD")
    yield fake
    fake.ledger.close()


@pytest.fixture
def linux(tmp_path, monkeypatch):
    fake = _fake_host(tmp_path, monkeypatch, "Linux")
    yield fake
    fake.ledger.close()


def test_each_interface_is_recorded_before_it_is_created(tmp_path, freebsd):
    reservation = reserve_subnet(tmp_path, HostInterfaces(frozenset(), ()))
    net = TapNetwork.reserved(reservation)
    net.create(freebsd.ledger, print)

    creates = {cmd: names for cmd, names in freebsd.calls if cmd.endswith("create")}
    assert creates == {"ifconfig bridge10000 create": [network.TAP_SYSCTL, "bridge10000"],
                       "ifconfig tap10000 create": [network.TAP_SYSCTL, "bridge10000",
                                                    "tap10000"]}
    assert freebsd.sysctl == "1"
    assert freebsd.interfaces == {"bridge10000", "tap10000"}

    net.remove(freebsd.ledger, print)
    assert freebsd.interfaces == set()
    assert freebsd.ledger.close() == ["restored net.link.tap.up_on_open=0"]
    reservation.release()


def test_a_killed_runs_interfaces_and_setting_are_removed_by_the_sweep(tmp_path, freebsd):
    """What the ledger lists after a kill between record and use: all of it goes."""
    reservation = reserve_subnet(tmp_path, HostInterfaces(frozenset(), ()))
    TapNetwork.reserved(reservation).create(freebsd.ledger, print)
    reservation.release()  # the run is gone: nobody holds the subnet
    report = freebsd.ledger.close()
    assert report == ["destroyed interface tap10000", "destroyed interface bridge10000",
                      "restored net.link.tap.up_on_open=0"]
    assert freebsd.interfaces == set()


def test_an_existing_interface_of_that_name_is_refused_not_reused(tmp_path, freebsd):
    reservation = reserve_subnet(tmp_path, HostInterfaces(frozenset(), ()))
    freebsd.interfaces.add("bridge10000")  # appeared after the pick
    net = TapNetwork.reserved(reservation)
    with pytest.raises(HarnessError, match=r"ifconfig bridge10000 create.*already exists"):
        net.create(freebsd.ledger, print)
    reservation.release()


def test_on_linux_the_same_interfaces_are_made_with_ip_and_nothing_else(tmp_path, linux):
    """The emulated bhyve's host: iproute2, the same names and ledger entries, no sysctl
    (a Linux tap needs no up_on_open)."""
    reservation = reserve_subnet(tmp_path, HostInterfaces(frozenset(), ()))
    net = TapNetwork.reserved(reservation)
    net.create(linux.ledger, print)
    commands = [cmd for cmd, _ in linux.calls]
    assert commands == [f"ip link add bridge10000 address {network.bridge_address('bridge10000')}"
                        " type bridge",
                        "ip tuntap add dev tap10000 mode tap",
                        "ip addr add 198.18.0.1/24 dev bridge10000",
                        "ip link set tap10000 master bridge10000 up",
                        "ip link set bridge10000 up"]
    assert dict(linux.calls)["ip tuntap add dev tap10000 mode tap"] == ["bridge10000",
                                                                        "tap10000"]
    reservation.release()
    assert network.bridge_address("bridge10000") == network.bridge_address("bridge10000")
    assert network.bridge_address("bridge10000") != network.bridge_address("bridge10001")
    assert linux.ledger.close() == ["destroyed interface tap10000",
                                    "destroyed interface bridge10000"]
    assert linux.interfaces == set()


def test_a_restored_vm_takes_over_the_interfaces_of_the_suspended_one(tmp_path, linux):
    """Both VMs of one name use one bridge and tap: the second create makes nothing, and
    the suspended VM's teardown leaves them to the restored one."""
    reservation = reserve_subnet(tmp_path, HostInterfaces(frozenset(), ()))
    net = TapNetwork.reserved(reservation)
    net.create(linux.ledger, print, user="suspended")
    made = len(linux.calls)
    net.create(linux.ledger, print, user="restored")
    assert len(linux.calls) == made, "the restored VM re-created the interfaces"
    net.remove(linux.ledger, print, user="suspended")
    assert linux.interfaces == {"bridge10000", "tap10000"}, "removed under the restored VM"
    net.remove(linux.ledger, print, user="restored")
    assert linux.interfaces == set()
    reservation.release()
