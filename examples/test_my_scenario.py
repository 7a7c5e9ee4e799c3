"""A scenario of one's own, written against bhyve-snaptest's pytest plugin.

Install the harness into the environment that runs this suite (``pip install
/path/to/bhyve-snaptest``): its pytest11 entry point loads the plugin, so the fixtures
(vm_booted, vm_factory, scenario, test_results) and options (--hypervisor, --copy-size, ...)
are there without a conftest.py. The guest image comes from the image cache, which
BHYVE_SNAPTEST_CACHE names (README, "Where things live").
"""

import pytest

from bhyve_snaptest.scenario import LifecycleChecks, start_workloads, suspend_restore_cycle

pytestmark = [pytest.mark.scenario, pytest.mark.copy_source]


def test_a_guest_suspended_for_ten_seconds_keeps_its_workloads(vm_booted, scenario,
                                                               test_results):
    """The seed's workloads across one suspend of ten seconds, whatever the options say."""
    checks = LifecycleChecks(vm_booted)
    run = start_workloads(vm_booted, scenario, expected_restores=1)
    cycle, _ = suspend_restore_cycle(vm_booted, run, 1, suspended_for_s=10.0,
                                     timeout=scenario.step_timeout_s, checks=checks,
                                     timeline=test_results.timeline)
    states = run.wait_verdicts(vm_booted.guest, scenario.step_timeout_s)
    assert cycle.copy_progress_at_suspend < 1.0, "the copy ended before the suspend"
    assert {name: state.verdict for name, state in states.items()} == {
        "copy": "PASS", "ping": "PASS", "memory": "PASS"}
