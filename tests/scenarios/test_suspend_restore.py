"""The seed test plan of FreeBSD review D34547, automated.

Boot the guest; start a file copy and a ping in it; while both run, suspend the VM to a
checkpoint (the hypervisor ends); stay suspended; restore; both workloads must finish with
PASS and the guest must still work. The guest kernel is checked after every step. The
hypervisor's sandbox is checked while the guest is busy and after the restore (bhyve:
Capsicum, judged by --expect-capsicum; QEMU: recorded as not applicable).
"""

import pytest

from bhyve_snaptest.health import guest_problems
from bhyve_snaptest.scenario import LifecycleChecks, start_workloads, suspend_restore_cycle

pytestmark = [pytest.mark.scenario, pytest.mark.matrix, pytest.mark.copy_source]

#: Phases the scenario cannot do without (copy_source_s where the host makes the copy's
#: source); the rest of total_s is the harness's own time: harness_overhead_s.
UNAVOIDABLE_PHASES = ("copy_source_s", "boot_to_ssh_s", "memory_prepare_s", "source_create_s",
                      "progress_wait_s", "suspend_s", "suspended_s", "restore_s",
                      "workloads_done_after_restore_s")


def test_busy_guest_survives_suspend_and_restore(vm_booted, scenario, test_results):
    """A copy and a ping running across suspend and restore both end PASS."""
    vm, metrics, timeout = vm_booted, test_results.metrics, scenario.step_timeout_s
    checks = LifecycleChecks(vm)
    checks.after("boot")
    run = start_workloads(vm, scenario, expected_restores=1, phase=test_results.phase)
    metrics["sandbox_busy"], sandbox_failures = vm.sandbox(scenario.expect_capsicum)

    cycle, checkpoint = suspend_restore_cycle(vm, run, 1,
                                              suspended_for_s=scenario.suspended_for_s,
                                              timeout=timeout, checks=checks,
                                              timeline=test_results.timeline)
    # One cycle: its number is not a measurement (the repeat summary would spread it).
    metrics.update({k: v for k, v in cycle.as_metrics().items() if k != "number"})
    metrics["sandbox_restored"], restored_failures = vm.sandbox(scenario.expect_capsicum,
                                                                closed=checkpoint.files)
    with test_results.phase("verdict_wait_s"):
        states = run.wait_verdicts(vm.guest, timeout)
    metrics["workloads_done_after_restore_s"] = round(
        cycle.restore_to_ssh_s + metrics["verdict_wait_s"], 3)
    checks.after("workloads done")
    problems = guest_problems(vm)
    run.collect(vm.guest, test_results.directory / "workloads")
    metrics["total_s"] = round(test_results.elapsed(), 3)
    metrics["unavoidable_s"] = round(sum(float(metrics.get(p, 0)) for p in UNAVOIDABLE_PHASES),
                                     3)
    metrics["harness_overhead_s"] = round(metrics["total_s"] - metrics["unavoidable_s"], 3)
    metrics["overhead_ratio"] = round(metrics["total_s"] / metrics["unavoidable_s"], 3)
    metrics["verdicts"] = {name: state.verdict for name, state in states.items()}
    test_results.note_verdicts(metrics["verdicts"])

    assert cycle.copy_progress_at_suspend < 1.0, \
        "the copy had finished before the suspend: this run proves nothing"
    assert cycle.copy_progress_at_suspend > 0.0, "the copy had not started at the suspend"
    assert states["copy"].passed, f"copy: {states['copy'].verdict}"
    assert states["ping"].passed, f"ping: {states['ping'].verdict}"
    assert states["memory"].passed, f"memory: {states['memory'].verdict}"
    assert problems == [], "the guest is not healthy after the restore"
    assert sandbox_failures == [], "the sandbox while the guest was busy"
    assert restored_failures == [], "the sandbox after the restore"
