"""Several suspend/restore cycles during one run of the workloads (CRIU's --iters).

Between cycles the workloads must demonstrably move on (more of the copy, a new ping
reply), so each suspend lands on a guest that really ran after the previous restore.
"""

import pytest

from bhyve_snaptest.scenario import LifecycleChecks, start_workloads, suspend_restore_cycle

pytestmark = [pytest.mark.scenario, pytest.mark.matrix, pytest.mark.copy_source]


def test_workloads_survive_repeated_cycles(vm_booted, scenario, test_results):
    """--cycles suspend/restore cycles; every verdict PASS; metrics per cycle."""
    vm, timeout, cycles = vm_booted, scenario.step_timeout_s, scenario.cycles
    checks = LifecycleChecks(vm)
    checks.after("boot")
    # The guest's clock stops while suspended: the ping must outlast every cycle's
    # wait for progress and reconnect, in guest time.
    run = start_workloads(vm, scenario, expected_restores=cycles,
                          ping_count=scenario.ping_count + 15 * cycles,
                          phase=test_results.phase)

    done = []
    for number in range(1, cycles + 1):
        if done:  # the memory workload re-verifies on its own after every restore mark
            run.wait_progress(vm.guest, run.states(vm.guest), timeout, ("copy", "ping"))
        cycle, _ = suspend_restore_cycle(vm, run, number,
                                         suspended_for_s=scenario.suspended_for_s,
                                         timeout=timeout, checks=checks,
                                         timeline=test_results.timeline)
        done.append(cycle)
    test_results.metrics["cycles"] = [c.as_metrics() for c in done]
    with test_results.phase("verdict_wait_s"):
        states = run.wait_verdicts(vm.guest, timeout)
    test_results.metrics["verdicts"] = {n: s.verdict for n, s in states.items()}
    test_results.note_verdicts(test_results.metrics["verdicts"])
    run.collect(vm.guest, test_results.directory / "workloads")

    assert done[-1].copy_progress_at_suspend < 1.0, \
        "the copy had finished before the last suspend: make --copy-size larger"
    assert states["copy"].passed, f"copy: {states['copy'].verdict}"
    assert states["ping"].passed, f"ping: {states['ping'].verdict}"
    assert states["memory"].passed, f"memory: {states['memory'].verdict}"
