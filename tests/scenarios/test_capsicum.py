"""bhyve under Capsicum (review D34547): sandboxed before and after a suspend and restore.

bhyve-only: capability mode is a FreeBSD kernel feature, and QEMU has no equivalent here.
``--expect-capsicum`` says what the bhyve under test must do: ``yes`` (the patch's claim),
``no`` (a build with Capsicum compiled out), or ``auto`` (report; a bhyve without capability
mode is an expected failure, shown as such, never a pass).
"""

import pytest

from fixtures.capsicum import CapsicumReport, inspect
from fixtures.health import guest_problems

pytestmark = [pytest.mark.scenario, pytest.mark.hypervisor("bhyve")]


def _check(report: CapsicumReport, expect: str) -> None:
    if expect == "no":
        assert not report.capability_mode, "bhyve is in capability mode; --expect-capsicum=no"
        return
    if not report.capability_mode:
        if expect == "auto":
            pytest.xfail(f"bhyve pid {report.pid} is not in capability mode (Capsicum "
                         "compiled out, e.g. WITHOUT_CAPSICUM); --expect-capsicum=yes to fail")
        pytest.fail(f"bhyve pid {report.pid} is not in capability mode")
    assert report.socket_problems == (), "the snapshot socket's rights are wrong"


def test_bhyve_stays_sandboxed_across_suspend_and_restore(vm_booted, scenario, test_results):
    """bhyve runs in capability mode, suspends and restores in it, and is sandboxed again."""
    vm = vm_booted
    timeout, expect = scenario.step_timeout_s, scenario.expect_capsicum

    before = inspect(vm.process.pid, vm.snapshot_socket, vm.record)
    test_results.metrics["capsicum_before"] = before.as_metrics()
    _check(before, expect)

    checkpoint = vm.suspend(vm.workdir / "capsicum.ckp", timeout)
    assert checkpoint.size_bytes > 0
    if expect == "yes":  # vm_destroy() after caph_enter() (review D34547) must still work
        assert vm.findings == [], "; ".join(vm.findings)
    vm.restore(checkpoint, timeout)
    vm.reconnect(timeout)

    after = inspect(vm.process.pid, vm.snapshot_socket, vm.record)
    test_results.metrics["capsicum_after"] = after.as_metrics()
    _check(after, expect)
    assert guest_problems(vm) == [], "the guest is not healthy after the restore"
