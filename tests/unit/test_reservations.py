"""Concurrent runs never share a subnet, an interface name, a port or a host setting."""

import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from bhyve_snaptest.errors import HarnessError
from bhyve_snaptest.hostsettings import SharedHostSetting
from bhyve_snaptest.ledger import Ledger
from bhyve_snaptest.reservations import (
    SUBNET_POOL,
    HostInterfaces,
    held_by_this_process,
    reserve_port,
    reserve_subnet,
    subnet_key,
    sweep_reservations,
    unless_reserved,
)

NO_INTERFACES = HostInterfaces(frozenset({"lo"}), (ipaddress.ip_network("127.0.0.0/8"),))


def test_a_subnet_an_interface_has_is_never_picked(tmp_path):
    host = HostInterfaces(frozenset({"lo", "em0"}),
                          (ipaddress.ip_network("127.0.0.0/8"),
                           ipaddress.ip_network("198.18.0.0/23")))
    reservation = reserve_subnet(tmp_path, host)
    assert reservation.subnet == ipaddress.ip_network("198.18.2.0/24")
    assert (reservation.bridge, reservation.tap) == ("bridge10002", "tap10002")


def test_a_subnet_whose_interface_names_exist_is_never_picked(tmp_path):
    """A killed run's tap keeps its subnet out of use until a sweep destroys it."""
    host = HostInterfaces(frozenset({"lo", "tap10000"}), NO_INTERFACES.networks)
    assert reserve_subnet(tmp_path, host).subnet == SUBNET_POOL[1]


def test_a_subnet_held_by_another_process_is_skipped_until_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import sys
            from pathlib import Path
            from bhyve_snaptest.reservations import HostInterfaces, reserve_subnet
            import ipaddress
            host = HostInterfaces(frozenset(), ())
            print(reserve_subnet(Path({str(tmp_path)!r}), host).subnet, flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == str(SUBNET_POOL[0])
        mine = reserve_subnet(tmp_path, NO_INTERFACES)
        assert mine.subnet == SUBNET_POOL[1]
        mine.release()
    finally:
        holder.kill()
        holder.wait()
    assert reserve_subnet(tmp_path, NO_INTERFACES).subnet == SUBNET_POOL[0], \
        "the dead holder's subnet must be free at once"


def test_a_released_subnet_can_be_taken_again_and_leaves_no_file(tmp_path):
    first = reserve_subnet(tmp_path, NO_INTERFACES)
    second = reserve_subnet(tmp_path, NO_INTERFACES)
    assert first.subnet != second.subnet
    first.release()
    second.release()
    assert list((tmp_path / "reservations" / "subnet").iterdir()) == []


def test_no_free_subnet_is_a_clear_error(tmp_path):
    host = HostInterfaces(frozenset(), (ipaddress.ip_network("198.18.0.0/15"),))
    with pytest.raises(HarnessError, match=r"no free guest subnet.*bhyve-snaptest clean"):
        reserve_subnet(tmp_path, host)


@pytest.mark.skipif(sys.platform != "linux", reason="ip(8) interfaces are Linux's")
def test_a_real_interface_on_a_pool_subnet_is_skipped(tmp_path):
    """The picker reads the host's real interfaces: an interface with an address in the
    pool's first /24 pushes the pick to the next one. (A veth pair: it needs no kernel
    module, where the dummy driver may be missing.)"""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to add an interface")
    name = f"snapt{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
                   check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.18.0.7/24", "dev", name], check=True)
        host = HostInterfaces.read()
        assert name in host.names
        reservation = reserve_subnet(tmp_path, host)
        assert reservation.subnet != SUBNET_POOL[0]
        assert host.conflict(0, SUBNET_POOL[0]) == "an interface has 198.18.0.0/24"
        reservation.release()
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


def test_ports_are_never_handed_to_two_runs(tmp_path):
    ports = [reserve_port(tmp_path) for _ in range(20)]
    values = [p.value for p in ports]
    assert len(set(values)) == 20
    for port in ports:
        port.release()


def test_a_leftovers_remover_waits_for_a_living_holder(tmp_path):
    """A dead run's interface is destroyed only while no living run holds its subnet; the
    run that holds it may remove its own."""
    reservation = reserve_subnet(tmp_path, NO_INTERFACES)
    key = subnet_key(reservation.subnet)
    assert held_by_this_process(tmp_path, "subnet", key)
    with unless_reserved(tmp_path, "subnet", key) as free:
        assert free, "this run's own interfaces are its to remove"
    reservation.release()
    with unless_reserved(tmp_path, "subnet", key) as free:
        assert free


def test_sweep_removes_only_reservation_files_nobody_holds(tmp_path):
    held = reserve_port(tmp_path)
    stale = tmp_path / "reservations" / "port" / "1.lock"
    stale.touch()  # what a killed run leaves: a file whose lock the kernel dropped
    assert sweep_reservations(tmp_path) == ["removed 1 stale reservation file(s)"]
    assert not stale.exists() and held.lock.path.exists()
    held.release()


# -- a host setting shared by concurrent runs ------------------------------------------------


class FakeSysctl:
    def __init__(self, value: str) -> None:
        self.value = value
        self.writes: list[str] = []

    def setting(self, root) -> SharedHostSetting:
        return SharedHostSetting("net.link.tap.up_on_open", "1", lambda: self.value,
                                 self._write, root)

    def _write(self, value: str) -> None:
        self.value = value
        self.writes.append(value)


def test_the_last_run_to_finish_restores_the_original(tmp_path):
    sysctl = FakeSysctl("0")
    first, second = Ledger.open_new(tmp_path), Ledger.open_new(tmp_path)
    setting = sysctl.setting(tmp_path)

    assert setting.acquire(first.run_id)
    assert setting.acquire(second.run_id), "the second run needs it too"
    assert sysctl.value == "1" and sysctl.writes == ["1"]
    assert setting.release(first.run_id) is None, "restored under the second run's feet"
    assert sysctl.value == "1"
    assert setting.release(second.run_id) == "restored net.link.tap.up_on_open=0"
    assert sysctl.value == "0"
    first.close()
    second.close()


def test_a_host_that_has_the_value_already_is_left_alone(tmp_path):
    sysctl = FakeSysctl("1")
    run = Ledger.open_new(tmp_path)
    setting = sysctl.setting(tmp_path)
    assert not setting.acquire(run.run_id)
    assert setting.release(run.run_id) is None
    assert sysctl.writes == []
    run.close()


def test_a_killed_holder_does_not_keep_the_setting_forever(tmp_path):
    """A run that died holding the setting no longer counts: the last living run puts the
    original back."""
    sysctl = FakeSysctl("0")
    setting = sysctl.setting(tmp_path)
    dead_run = tmp_path / "runs" / "20261204T000000-1"
    dead_run.mkdir(parents=True)  # no living owner holds its lock
    assert setting.acquire(dead_run.name)
    living = Ledger.open_new(tmp_path)
    assert setting.acquire(living.run_id)
    assert setting.release(living.run_id) == "restored net.link.tap.up_on_open=0"
    living.close()
