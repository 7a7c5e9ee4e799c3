"""bhyve under Capsicum (review D34547): sandboxed while busy, across a live checkpoint,
and across a suspend and restore.

bhyve-only: capability mode is a FreeBSD kernel feature, and QEMU has no equivalent here.
Each look at the sandbox runs every check of bhyve_snaptest.capsicum (capability mode, the
snapshot socket's rights exactly as upstream limits them, disk and guest-memory
descriptors, the ``-t`` directory's descriptor, no checkpoint file left open, no casper
channel), each a named verdict in metrics.json. ``--expect-capsicum`` says what the bhyve
under test must do: ``yes`` (the patch's claim: findings fail too), ``no`` (a build with
Capsicum compiled out), or ``auto`` (report; a bhyve without capability mode is an expected
failure, shown as such, never a pass).
"""

import pytest

from bhyve_snaptest.health import guest_problems
from bhyve_snaptest.scenario import start_workloads

pytestmark = [pytest.mark.scenario, pytest.mark.hypervisor("bhyve"), pytest.mark.freebsd_host,
              pytest.mark.copy_source]


def _judge(state: dict, failures: list[str], expect: str, moment: str) -> None:
    """Fail on what --expect-capsicum forbids; a bhyve without capability mode under
    ``auto`` is an expected failure."""
    report = state["capsicum"]
    if not isinstance(report, dict):
        pytest.fail(f"{moment}: the sandbox could not be checked: {report}")
    if expect == "auto" and not report["capability_mode"]:
        pytest.xfail(f"bhyve pid {report['pid']} is not in capability mode (Capsicum "
                     "compiled out, e.g. WITHOUT_CAPSICUM); --expect-capsicum=yes to fail")
    assert failures == [], f"{moment}: " + "; ".join(failures)


def test_bhyve_stays_sandboxed_while_busy_across_checkpoint_suspend_and_restore(
        vm_booted, scenario, test_results, record_property):
    """Sandboxed with the copy and ping running; no checkpoint file held after a live
    checkpoint; suspended and restored in capability mode, and sandboxed again."""
    vm, timeout = vm_booted, scenario.step_timeout_s

    def look(moment: str, closed=()) -> None:
        """The sandbox at ``moment``: in metrics.json, each check as a JUnit property."""
        state, failures = vm.sandbox(scenario.expect_capsicum, closed=closed)
        test_results.metrics[f"capsicum_{moment}"] = state
        if isinstance(state["capsicum"], dict):
            for name, check in state["capsicum"]["checks"].items():
                record_property(f"capsicum.{moment}.{name}",
                                f"{check['status']}: {check['detail']}")
        _judge(state, failures, scenario.expect_capsicum, moment)

    look("after_start")
    start_workloads(vm, scenario, expected_restores=1)
    look("busy")

    live = vm.checkpoint(vm.save_target("capsicum-live.ckp"), timeout)
    look("after_checkpoint", closed=live.files)

    checkpoint = vm.suspend(vm.save_target("capsicum.ckp"), timeout)
    assert checkpoint.size_bytes > 0
    if scenario.expect_capsicum == "yes":  # vm_destroy() after caph_enter() must still work
        assert vm.findings == [], "; ".join(vm.findings)
    vm.restore(checkpoint, timeout)
    vm.reconnect(timeout)
    look("after_restore", closed=checkpoint.files)
    assert guest_problems(vm) == [], "the guest is not healthy after the restore"
