"""Several VMs at once (pytest-xdist, ``-n 2``): one run, two workers, nothing shared that
must not be.

An inner run starts the seed scenario twice (``--repeat 2``: one test id, two runs) on two
workers. Each worker is a pytest process with its own run id, ledger and reservations;
together they must give one results folder with both runs' folders, one junit.xml and one
report, two VMs with different names and forwarded ports, both VMs alive at the same time
(else the run proves nothing about running at once), and nothing left afterwards.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from innerruns import SEED_SCENARIO, TEARDOWN_S, FaultLab, assert_nothing_left

from bhyve_snaptest.options import ScenarioOptions

pytestmark = [pytest.mark.scenario, pytest.mark.selftest]

#: A commands.log line: local date and time (bhyve_snaptest.results.timestamp), then the command.
_LOG_LINE = re.compile(r"^(?P<when>\d{4}-\d\d-\d\dT\S+) (?P<what>.*)$")
#: QEMU's user-mode network forwards a host port to the guest's SSH (bhyve_snaptest.drivers.qemu).
_HOSTFWD = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(?P<port>\d+)-")


def span(commands_log: Path) -> tuple[datetime.datetime, datetime.datetime]:
    """When a test's first and last commands ran."""
    times = [datetime.datetime.fromisoformat(m["when"])
             for line in commands_log.read_text().splitlines()
             if (m := _LOG_LINE.match(line))]
    return times[0], times[-1]


def test_two_seed_runs_on_two_workers_share_one_run_and_nothing_else(
        lab: FaultLab, scenario: ScenarioOptions) -> None:
    run = lab.start("xdist", SEED_SCENARIO, "-n", "2", "--repeat", "2")
    status = run.wait_exit(scenario.boot_timeout_s + 1200 + TEARDOWN_S, lab.watch)
    assert status == 0, run.output_tail()

    [folder] = [p for p in run.results_dir.iterdir() if not p.is_symlink()]
    cases = list(ET.parse(folder / "junit.xml").getroot().iter("testcase"))
    assert [case.get("name") for case in cases] == [
        "test_busy_guest_survives_suspend_and_restore"] * 2
    assert (folder / "report.html").is_file()
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert folders == [f"test_busy_guest_survives_suspend_and_restore_run{k}of2"
                       for k in (1, 2)]

    logs = [(folder / name / "commands.log").read_text() for name in folders]
    names = [set(re.findall(r"snaptest-\d+-\d+", log)) for log in logs]
    assert names[0] and names[1] and not names[0] & names[1], names
    if scenario.hypervisor == "qemu":
        ports = [set(_HOSTFWD.findall(log)) for log in logs]
        assert ports[0] and ports[1] and not ports[0] & ports[1], ports
    (start_a, end_a), (start_b, end_b) = (span(folder / name / "commands.log")
                                          for name in folders)
    assert start_a < end_b and start_b < end_a, "the two scenarios did not run at once"
    assert_nothing_left(lab.watch, "after the -n 2 run")
