"""Failed suspends lose nothing: the save fails with a clear error and the VM runs on.

The checkpoint is aimed at a directory that does not exist, at a read-only file system and
at a file system too small for the guest's memory. Each time the harness must report a
SuspendError, the hypervisor must still run the guest, and the workloads, which never saw
a suspend, must end PASS. With bhyve -t (--checkpoint-dir, review D34547) each of these
targets is outside the -t directory, so they test what -t means: a sandboxed bhyve may
create files only in the directory it holds, must refuse, and must run on. A -t directory
missing at start is bhyve's own error, reported as such (bhyve only, with -t).

A hypervisor killed in the middle of the save cannot lose nothing, but it must be reported
as what it is: a SuspendError that says the hypervisor ended during the save and names the
partial files it left, and a VM the harness counts as dead.
"""

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bhyve_snaptest.config import MiB
from bhyve_snaptest.drivers.base import VirtualMachine, VMState
from bhyve_snaptest.errors import HarnessError, SuspendError
from bhyve_snaptest.guest_files import fill_with_random
from bhyve_snaptest.hostfs import small_tmpfs
from bhyve_snaptest.scenario import LifecycleChecks, start_workloads

#: Enough copy to be running at the failed suspend; its size is not what is tested here.
COPY_BYTES = 128 * MiB

pytestmark = pytest.mark.scenario


@pytest.mark.copy_source(size=COPY_BYTES)
@pytest.mark.parametrize("where", ["missing-directory", "read-only", "full"])
def test_a_failed_suspend_leaves_the_vm_running(vm_booted, scenario, run_ledger, where):
    """The save fails, the error says why, and copy, ping and memory still end PASS."""
    vm, timeout = vm_booted, scenario.step_timeout_s
    checks = LifecycleChecks(vm)
    run = start_workloads(vm, scenario, expected_restores=0, copy_bytes=COPY_BYTES,
                          memory_duration_s=30)

    target = vm.workdir / where
    if where == "missing-directory":
        with pytest.raises(SuspendError) as failure:
            vm.suspend(target / "no" / "such" / "dir.ckp", timeout)
    else:
        size = 1 if where == "read-only" else vm.spec.memory_mb // 8
        with small_tmpfs(run_ledger, target, size_mib=size, read_only=where == "read-only",
                         record=vm.record), pytest.raises(SuspendError) as failure:
            vm.suspend(target / "vm.ckp", timeout)
    assert str(target) in str(failure.value), "the error must name where the save went"
    assert vm.state is VMState.RUNNING and vm.process.alive, "the VM must run on"

    vm.reconnect(timeout)
    checks.after(f"failed suspend ({where})")
    states = run.wait_verdicts(vm.guest, timeout)
    assert {name: state.verdict for name, state in states.items()} == \
        {"copy": "PASS", "ping": "PASS", "memory": "PASS"}


@pytest.mark.hypervisor("bhyve")
@pytest.mark.checkpoint_dir
def test_a_missing_checkpoint_directory_is_bhyves_error(vm_factory, vm_spec, scenario):
    """The harness does not make the -t directory: bhyve's error says it is missing."""
    vm = vm_factory.build(vm_spec)
    missing = vm.workdir / "no-such-checkpoint-dir"
    # bhyve-only, like -t itself: this VM's bhyve gets a -t directory that is not there.
    vm.settings = replace(vm.settings, checkpoint_dir=missing)
    with pytest.raises(HarnessError, match="does not exist"):
        vm.boot(scenario.boot_timeout_s)
    assert not missing.exists()


#: The killer strikes once this much of the memory file is written: well inside the save.
KILL_AT_BYTES = 4 * MiB


class KillDuringSave(threading.Thread):
    """Kills the hypervisor with SIGKILL once ``memory_file`` holds ``at_bytes``: an
    event in the save, watched every millisecond, not a guessed delay."""

    def __init__(self, vm: VirtualMachine, memory_file: Path, at_bytes: int,
                 timeout: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.memory_file, self.at_bytes = vm.process.pid, memory_file, at_bytes
        self.deadline = time.monotonic() + timeout
        self.killed_at_bytes: int | None = None

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                size = self.memory_file.stat().st_size
            except FileNotFoundError:
                size = 0
            if size >= self.at_bytes:
                os.kill(self.pid, signal.SIGKILL)
                self.killed_at_bytes = size
                return
            time.sleep(0.001)


def test_a_hypervisor_killed_during_the_save_is_reported_with_its_partial_files(
        vm_booted, scenario, test_results):
    """SIGKILL in the middle of the save: a SuspendError naming the partial files."""
    vm, timeout = vm_booted, scenario.step_timeout_s
    # Random data in guest RAM makes the save long enough to be caught in the middle
    # (zero pages cost QEMU almost nothing to save).
    ballast_mib = vm.spec.memory_mb * 3 // 8
    fill_with_random(vm.guest, f"{vm.spec.image.memory_dir}/ballast", ballast_mib,
                     timeout=timeout)
    target = vm.save_target("killed.ckp")
    memory_file = vm.checkpoint_files(target)[0]
    killer = KillDuringSave(vm, memory_file, KILL_AT_BYTES, timeout)
    killer.start()
    with pytest.raises(SuspendError) as failure:
        vm.suspend(target, timeout)
    killer.join(timeout)
    message = str(failure.value)
    test_results.metrics["killed_at_bytes"] = killer.killed_at_bytes
    test_results.metrics["partial_file_bytes"] = memory_file.stat().st_size

    assert killer.killed_at_bytes is not None, "the save ended before the kill: no fault"
    assert "during the save" in message and "SIGKILL" in message, message
    assert f"partial files {memory_file} (" in message, "the error must name what was left"
    assert memory_file.stat().st_size < ballast_mib * MiB, "the file must be partial"
    assert vm.state is VMState.DEAD and not vm.process.alive
