"""The lifecycle every driver shares, against a stand-in hypervisor and a stand-in sshd.

The stand-in is a small Python program with a hypervisor's protocol: console on stdio,
diagnostics on stderr, exit status 0 when asked to end after a save. This proves the base
class's state checks, error mapping, console log, ledger use and idempotent destroy without
any real hypervisor.
"""

import os
import signal
import sys
from pathlib import Path

import pytest

from bhyve_snaptest.config import GuestImage, VMSpec
from bhyve_snaptest.drivers.base import StateError, VirtualMachine, VMContext, VMState
from bhyve_snaptest.errors import HarnessError, RestoreError, SuspendError, VMLaunchFailure
from bhyve_snaptest.ledger import Ledger, read_ledger

STAND_IN = """
import signal, sys, time
mode = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if mode == "die":
    print("stand-in: cannot open firmware", file=sys.stderr)
    sys.exit(4)
if mode == "restore":
    print("Restoring vm mem...", flush=True)
print("SNAPTEST-ERROR: no data disk" if mode == "broken" else "SNAPTEST-READY ip=10.0.2.15",
      flush=True)
time.sleep(300)
"""


class StandInVM(VirtualMachine):
    driver_name = "stand-in"

    def __init__(self, spec, context, endpoint, mode="boot"):
        super().__init__(spec, context)
        self.endpoint = endpoint
        self.mode = mode

    def boot_argv(self):
        return [sys.executable, "-c", STAND_IN, self.mode]

    def restore_argv(self, checkpoint):
        return [sys.executable, "-c", STAND_IN, "restore", str(checkpoint.path)]

    def ssh_endpoint(self):
        return self.endpoint

    @property
    def host_address(self):
        return "10.0.2.2"

    @property
    def guest_cidr(self):
        return "10.0.2.15/24"

    def _prepare_launch(self, restoring):
        pass

    def _after_launch(self, restoring, timeout):
        if restoring and not self.process.wait_for_console("Restoring vm mem", timeout):
            raise StateError("stand-in did not restore")

    def _save(self, path, *, keep_running, timeout, disk_copy=None):
        if self.mode == "unsaveable":
            raise HarnessError("migration failed: No space left on device")
        if self.mode == "killed-while-saving":
            path.write_bytes(b"guest")
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait_exit(timeout)
            raise HarnessError("the save did not complete")
        path.write_bytes(b"guest memory")
        if disk_copy is not None:
            self._copy_disk(disk_copy, "paused")
        if not keep_running:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait_exit(timeout)
        return (path,)


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger.open_new(tmp_path / "state")
    yield ledger
    ledger.close()


def _vm(tmp_path: Path, ledger, endpoint, mode="boot") -> StandInVM:
    image = GuestImage(name="stand-in", directory=tmp_path, ssh_key=endpoint.key_file,
                       ready_pattern="SNAPTEST-READY")
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    context = VMContext(tmp_path, results, ledger, lambda line: None)
    vm = StandInVM(VMSpec(name="stand-in", image=image), context, endpoint, mode)
    vm.disk.write_bytes(b"disk at boot")
    return vm


def test_boot_suspend_restore_destroy(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest)
    vm.boot(timeout=30)
    assert vm.state is VMState.RUNNING
    assert vm.guest.check_output("echo up", timeout=10) == "up\n"

    checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert vm.state is VMState.SUSPENDED
    assert vm.guest is None, "SSH must be dropped before a suspend"
    assert vm.process.exit_status.exitcode == 0
    assert checkpoint.size_bytes == len(b"guest memory")
    assert (tmp_path / "results" / "s.ckp.harness.json").exists()

    vm.restore(checkpoint, timeout=30)
    vm.reconnect(timeout=30)
    assert vm.state is VMState.RUNNING
    console = (tmp_path / "results" / "console.log").read_text()
    assert "stand-in boot of stand-in" in console
    assert "stand-in restore of stand-in" in console
    assert console.index("Restoring vm mem") > console.index("stand-in restore")

    vm.destroy()
    vm.destroy()
    assert vm.state is VMState.DESTROYED
    assert not vm.process.alive
    _, entries = read_ledger(ledger.path)
    assert [e for e in entries if e["kind"] == "process"] == []


def test_verbs_check_the_state(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest)
    with pytest.raises(StateError, match="is created; needs running"):
        vm.suspend(tmp_path / "s.ckp", timeout=5)
    vm.destroy()
    with pytest.raises(StateError, match="is destroyed"):
        vm.boot(timeout=5)


def test_a_hypervisor_that_dies_at_launch_reports_its_output(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest, mode="die")
    with pytest.raises(VMLaunchFailure) as failure:
        vm.boot(timeout=30)
    message = str(failure.value)
    assert "cannot open firmware" in message
    assert "command:" in message
    vm.destroy()


def test_a_guest_error_marker_fails_the_boot_at_once(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest, mode="broken")
    with pytest.raises(VMLaunchFailure, match="SNAPTEST-ERROR: no data disk"):
        vm.boot(timeout=60)
    vm.destroy()
    assert not vm.process.alive


def test_a_failed_save_is_a_suspend_error_and_the_vm_keeps_running(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest, mode="unsaveable")
    vm.boot(timeout=30)
    with pytest.raises(SuspendError, match="No space left on device") as failure:
        vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert "SNAPTEST-READY" in str(failure.value), "the console tail belongs in the error"
    assert vm.state is VMState.RUNNING
    assert vm.process.alive
    vm.destroy()


def test_a_live_checkpoint_goes_with_a_copy_of_the_disk(tmp_path, ledger, fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest)
    vm.boot(timeout=30)
    checkpoint = vm.checkpoint(tmp_path / "live.ckp", timeout=30)
    vm.disk.write_bytes(b"the guest wrote on")
    assert vm.state is VMState.RUNNING and vm.process.alive
    assert checkpoint.kind == "checkpoint" and checkpoint.disk_taken == "paused"
    assert checkpoint.disk.read_bytes() == b"disk at boot"
    vm.destroy()


def test_restore_from_a_checkpoint_the_driver_refuses_starts_nothing(tmp_path, ledger,
                                                                     fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest)
    vm.boot(timeout=30)
    checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)
    vm.checkpoint_problems = lambda _checkpoint: ["memory is 1 bytes, expected 2"]
    with pytest.raises(RestoreError, match="cannot be restored into stand-in: "
                                           "memory is 1 bytes"):
        vm.restore(checkpoint, timeout=30)
    assert vm.state is VMState.SUSPENDED
    vm.destroy()


def test_a_hypervisor_killed_while_saving_is_reported_with_what_it_left(tmp_path, ledger,
                                                                        fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest, mode="killed-while-saving")
    vm.boot(timeout=30)
    with pytest.raises(SuspendError) as failure:
        vm.suspend(tmp_path / "s.ckp", timeout=30)
    message = str(failure.value)
    assert "the hypervisor ended (killed by signal SIGKILL) during the save" in message, message
    assert f"leaving partial files {tmp_path / 's.ckp'} (5 bytes)" in message
    assert vm.state is VMState.DEAD
    with pytest.raises(StateError, match="is dead"):
        vm.reconnect(timeout=5)
    vm.destroy()
    assert vm.state is VMState.DESTROYED


def test_an_empty_checkpoint_file_is_refused_before_the_hypervisor_starts(tmp_path, ledger,
                                                                          fake_guest):
    vm = _vm(tmp_path, ledger, fake_guest)
    vm.boot(timeout=30)
    checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)
    suspended = vm.process
    checkpoint.path.write_bytes(b"")
    with pytest.raises(RestoreError, match=r"s\.ckp is missing or empty"):
        vm.restore(checkpoint, timeout=30)
    assert vm.process is suspended and vm.state is VMState.SUSPENDED
    vm.destroy()
