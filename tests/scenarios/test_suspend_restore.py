"""The seed test plan of FreeBSD review D34547, automated.

Boot the guest; start a file copy and a ping in it; while both run, suspend the VM to a
checkpoint (the hypervisor ends); stay suspended; restore; both workloads must finish with
PASS and the guest must still work.
"""

import time

import pytest

from fixtures.health import guest_problems
from fixtures.workloads import CopyWorkload, PingWorkload, WorkloadRun

pytestmark = pytest.mark.scenario

#: Phases the scenario cannot do without; total_s over their sum is the harness overhead.
#: (workloads_done_after_restore_s includes the SSH reconnect, restore_to_ssh_s.)
UNAVOIDABLE_PHASES = ("boot_to_ssh_s", "source_create_s", "progress_wait_s", "suspend_s",
                      "suspended_s", "restore_s", "workloads_done_after_restore_s")


def test_busy_guest_survives_suspend_and_restore(vm_booted, scenario, test_results):
    """A copy and a ping running across suspend and restore both end PASS."""
    vm, metrics, timeout = vm_booted, test_results.metrics, scenario.step_timeout_s
    copy = CopyWorkload(scenario.copy_size_bytes, scenario.copy_share_before_suspend)
    ping = PingWorkload(vm.host_address, scenario.ping_count, scenario.ping_interval_s,
                        expected_restores=1)
    run = WorkloadRun([copy, ping], vm.spec.image.guest_dir)
    run.install(vm.guest)
    with test_results.phase("source_create_s"):
        run.start(vm.guest, copy)
        run.wait_phase(vm.guest, copy, "copying", timeout)
    run.start(vm.guest, ping)
    with test_results.phase("progress_wait_s"):
        run.wait_running(vm.guest, timeout)
    progress = CopyWorkload.progress(run.states(vm.guest)["copy"])

    with test_results.phase("suspend_s"):
        checkpoint = vm.suspend(vm.workdir / "suspend.ckp", timeout)
    assert vm.process is not None and not vm.process.alive, "hypervisor still runs"
    assert vm.process.exit_status.exitcode == 0, f"hypervisor ended {vm.process.exit_status}"
    metrics["checkpoint_bytes"] = checkpoint.size_bytes
    assert checkpoint.size_bytes > 0, f"checkpoint {checkpoint.path} is empty"

    with test_results.phase("suspended_s"):
        time.sleep(scenario.suspended_for_s)  # the scenario's chosen downtime, not a wait
    with test_results.phase("restore_s"):
        vm.restore(checkpoint, timeout)
    with test_results.phase("workloads_done_after_restore_s"):
        metrics["restore_to_ssh_s"] = round(vm.reconnect(timeout), 3)
        run.announce_restore(vm.guest)
        states = run.wait_verdicts(vm.guest, timeout)
    problems = guest_problems(vm)
    metrics["total_s"] = round(test_results.elapsed(), 3)
    metrics["unavoidable_s"] = round(sum(float(metrics[p]) for p in UNAVOIDABLE_PHASES), 3)
    metrics["overhead_ratio"] = round(metrics["total_s"] / metrics["unavoidable_s"], 3)
    metrics["copy_progress_at_suspend"] = round(progress, 4)
    metrics["verdicts"] = {name: state.verdict for name, state in states.items()}
    run.collect(vm.guest, test_results.directory / "workloads")

    assert progress < 1.0, "the copy had finished before the suspend: this run proves nothing"
    assert progress > 0.0, "the copy had not started at the suspend"
    assert states["copy"].passed, f"copy: {states['copy'].verdict}"
    assert states["ping"].passed, f"ping: {states['ping'].verdict}"
    assert problems == [], "the guest is not healthy after the restore"
