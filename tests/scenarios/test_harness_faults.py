"""The harness itself under faults: kill -9, pytest-timeout, Ctrl-C and SIGTERM.

The README promises that nothing outlives a run: teardown removes every VM and file after a
pass, a failure, a pytest-timeout or Ctrl-C, and after a ``kill -9`` the next run removes
what the dead run's ledger lists. These tests check that promise from the outside, with
inner runs (tests/scenarios/innerruns.py) hit by a fault at a known moment.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from innerruns import (
    SEED_SCENARIO,
    SWEEP_BANNER,
    TEARDOWN_S,
    WORKLOADS_STARTED,
    FaultLab,
    assert_listing_sees_the_run,
    assert_nothing_left,
    sweep_lines,
    wait_ended,
    write_inner_test,
)

from bhyve_snaptest.ledger import LEDGER_FILE
from bhyve_snaptest.options import ScenarioOptions
from bhyve_snaptest.results import TestResults

pytestmark = [pytest.mark.scenario, pytest.mark.selftest]

#: The run after a kill -9: a whole VM lifecycle (boot, suspend, restore, a guest command)
#: in the dead run's state directory, without the seed's workloads, whose sizing is the
#: seed scenario's business and would make this case fail for reasons of its own.
LIFECYCLE_TEST = '''\
def test_lifecycle_after_a_killed_run(vm_booted, scenario):
    vm, timeout = vm_booted, scenario.step_timeout_s
    checkpoint = vm.suspend(vm.save_target("suspend.ckp"), timeout)
    vm.restore(checkpoint, timeout)
    vm.reconnect(timeout)
    assert vm.guest.check_output("echo alive", timeout=60).strip() == "alive"
'''

#: pytest-timeout of the inner run in the timeout case, counted from the start of the test
#: function (timeout_func_only), so that the boot time, which varies with the host's load,
#: does not decide where it fires.
INNER_TIMEOUT_S = 5

#: What the frozen-suspend test writes to its commands.log once the hypervisor is frozen.
FROZEN = "snaptest-faults: hypervisor frozen"

#: A hypervisor that stops answering in the middle of a suspend: SIGSTOP freezes it, so the
#: suspend waits for it (far longer than INNER_TIMEOUT_S) and pytest-timeout fires inside
#: VirtualMachine.suspend every time. The frozen process must still be gone after teardown.
FROZEN_SUSPEND_TEST = f'''\
import os
import signal


def test_suspend_of_a_frozen_hypervisor(vm_booted, scenario):
    vm = vm_booted
    os.kill(vm.process.pid, signal.SIGSTOP)
    vm.record("{FROZEN}")
    vm.suspend(vm.save_target("suspend.ckp"), scenario.step_timeout_s)
'''


# -- the cases --------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
def test_kill_9_leftovers_are_removed_by_the_next_run(lab: FaultLab, scenario: ScenarioOptions,
                                                      test_results: TestResults) -> None:
    """kill -9 of the seed scenario skips every teardown; the next run with the same state
    must begin by removing what the dead run's ledger lists, pass (a whole VM lifecycle),
    and leave nothing of either run."""
    metrics, watch = test_results.metrics, lab.watch
    killed = lab.start("killed", SEED_SCENARIO)
    metrics["killed_at_s"] = killed.wait_for_command(WORKLOADS_STARTED,
                                                     scenario.boot_timeout_s + 300, watch)
    before = watch.listing()
    metrics["before_kill"] = before.as_dict()
    assert_listing_sees_the_run(before, watch)
    dead_runs = sorted(p.parent.name for p in (lab.state_dir / "runs").glob(f"*/{LEDGER_FILE}"))

    killed_at = time.monotonic()
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait_exit(30, watch) == -signal.SIGKILL
    # The dead run's ledger is still there (nothing cleaned it) and names its hypervisors.
    # They may end by themselves (the hangup of their terminal): note when, and why.
    metrics["right_after_kill"] = watch.listing().as_dict()
    hypervisors = list(watch.groups)
    metrics["hypervisor_ended_after_kill_s"] = wait_ended(hypervisors, killed_at, 15)
    metrics["hypervisor_log_tail"] = [
        line for log in sorted(killed.results_dir.glob("*/*/hypervisor.log"))
        for line in log.read_text(errors="replace").splitlines()[-3:]]
    left = watch.listing()
    metrics["left_before_sweep"] = left.as_dict()
    assert left.files, "kill -9 left no ledger: there is nothing for the next run to test"

    start = time.monotonic()
    next_run = lab.start("next", write_inner_test(lab.tmp_path / "inner", "test_next.py",
                                                  LIFECYCLE_TEST))
    status = next_run.wait_exit(scenario.boot_timeout_s + 3 * scenario.step_timeout_s,
                               watch)
    metrics["next_run_s"] = round(time.monotonic() - start, 3)
    output = next_run.output()
    metrics["sweep_report"] = sweep_lines(output)
    assert SWEEP_BANNER in output, f"the next run did not sweep:\n{next_run.output_tail()}"
    for run in dead_runs:
        assert f"removed ledger of dead run {run}" in output, \
            f"the sweep did not remove dead run {run}:\n{next_run.output_tail()}"
    assert status == pytest.ExitCode.OK, \
        f"the next run failed ({status}):\n{next_run.output_tail()}"
    assert_nothing_left(watch, "after the next run")


@pytest.mark.timeout(900)
def test_timeout_mid_suspend_leaves_nothing(lab: FaultLab, scenario: ScenarioOptions,
                                            test_results: TestResults) -> None:
    """pytest-timeout fires while the suspend waits for a frozen hypervisor; teardown must
    still remove the (stopped) hypervisor and every file."""
    inner_test = write_inner_test(lab.tmp_path / "inner", "test_frozen_suspend.py",
                                  FROZEN_SUSPEND_TEST)
    start = time.monotonic()
    run = lab.start("timeout", inner_test, "--timeout", str(INNER_TIMEOUT_S),
                    "-o", "timeout_func_only=true", "--tb=short")
    watch = lab.watch
    run.wait_for_command(re.compile(re.escape(FROZEN)), scenario.boot_timeout_s + 60, watch)
    before = watch.listing()
    test_results.metrics["before_timeout"] = before.as_dict()
    assert_listing_sees_the_run(before, watch)

    status = run.wait_exit(scenario.boot_timeout_s + INNER_TIMEOUT_S + TEARDOWN_S, watch)
    test_results.metrics["inner_run_s"] = round(time.monotonic() - start, 3)
    output = run.output()
    test_results.metrics["inner_summary"] = run.output_tail(3)
    assert f"Timeout (>{float(INNER_TIMEOUT_S)}s) from pytest-timeout" in output, \
        f"the inner run did not report the timeout:\n{run.output_tail()}"
    assert re.search(r": in suspend\b", output), \
        f"the timeout did not fire inside the suspend:\n{run.output_tail()}"
    assert status == pytest.ExitCode.TESTS_FAILED, f"inner run ended {status}:\n{run.output_tail()}"
    assert_nothing_left(watch, "after the timed-out run")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupt_mid_scenario_leaves_nothing(lab: FaultLab, scenario: ScenarioOptions,
                                               test_results: TestResults,
                                               sig: signal.Signals) -> None:
    """Ctrl-C (SIGINT to the run's process group) or SIGTERM, which the plugin maps to the
    same path, while the workloads run: teardown removes everything and the run reports the
    interruption."""
    watch = lab.watch
    run = lab.start(sig.name.lower(), SEED_SCENARIO)
    test_results.metrics["signalled_at_s"] = run.wait_for_command(
        WORKLOADS_STARTED, scenario.boot_timeout_s + 300, watch)
    before = watch.listing()
    test_results.metrics["before_signal"] = before.as_dict()
    assert_listing_sees_the_run(before, watch)

    start = time.monotonic()
    run.signal_group(sig)
    status = run.wait_exit(TEARDOWN_S, watch)
    test_results.metrics["signal_to_exit_s"] = round(time.monotonic() - start, 3)
    test_results.metrics["inner_summary"] = run.output_tail(3)
    assert "KeyboardInterrupt" in run.output(), \
        f"the inner run did not report the interruption:\n{run.output_tail()}"
    assert status == pytest.ExitCode.INTERRUPTED, f"inner run ended {status}:\n{run.output_tail()}"
    assert_nothing_left(watch, f"after {sig.name}")
