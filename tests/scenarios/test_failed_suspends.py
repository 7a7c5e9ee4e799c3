"""Failed suspends lose nothing: the save fails with a clear error and the VM runs on.

The checkpoint is aimed at a directory that does not exist, at a read-only file system and
at a file system too small for the guest's memory. Each time the harness must report a
SuspendError, the hypervisor must still run the guest, and the workloads, which never saw
a suspend, must end PASS.
"""

import pytest

from fixtures.config import MiB
from fixtures.drivers.base import VMState
from fixtures.errors import SuspendError
from fixtures.hostfs import small_tmpfs
from fixtures.scenario import LifecycleChecks
from fixtures.workloads import CopyWorkload, PingWorkload, WorkloadRun
from fixtures.workloads.memory import MemoryWorkload

pytestmark = pytest.mark.scenario

#: Enough copy to be running at the failed suspend; its size is not what is tested here.
COPY_BYTES = 128 * MiB


@pytest.mark.parametrize("where", ["missing-directory", "read-only", "full"])
def test_a_failed_suspend_leaves_the_vm_running(vm_booted, scenario, run_ledger, where):
    """The save fails, the error says why, and copy, ping and memory still end PASS."""
    vm, timeout = vm_booted, scenario.step_timeout_s
    checks = LifecycleChecks(vm)
    copy = CopyWorkload(COPY_BYTES, scenario.copy_share_before_suspend)
    ping = PingWorkload(vm.host_address, scenario.ping_count, scenario.ping_interval_s,
                        expected_restores=0)
    memory = MemoryWorkload.for_guest(vm.spec.memory_mb, scenario.memory_share,
                                      seed=scenario.memory_seed, expected_restores=0,
                                      duration_s=30, memory_dir=vm.spec.image.memory_dir)
    run = WorkloadRun([copy, ping, memory], vm.spec.image.guest_dir)
    run.install(vm.guest)
    run.start(vm.guest, memory)
    run.wait_until(vm.guest, memory.running_condition(), timeout, "memory pattern checked")
    run.start(vm.guest, copy)
    run.wait_phase(vm.guest, copy, "copying", timeout)
    run.start(vm.guest, ping)
    run.wait_running(vm.guest, timeout)

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
