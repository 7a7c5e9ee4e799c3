"""Two jobs on one host never touch each other, and a failed run keeps its evidence.

A shared CI agent runs several jobs at once, and each job's harness sweeps at start. These
cases run two seed scenarios as inner runs (tests/scenarios/innerruns.py) in one state
directory and act on them at known moments:

* ``bhyve-snaptest clean`` while both run must remove nothing: with both inner pytests
  frozen for the moment of the clean, every file and process of each is the same before and
  after, and both runs then pass;
* after ``kill -9`` of one, the clean removes exactly the dead run's leftovers while the
  other runs on and passes;
* a seed scenario whose checkpoint is damaged while the VM is suspended fails, and its
  failure message names the disk and checkpoint it kept, which are in its results with the
  workloads' logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from innerruns import (
    POLL_S,
    SEED_SCENARIO,
    TEARDOWN_S,
    WORKLOADS_STARTED,
    FaultLab,
    InnerRun,
    assert_nothing_left,
    read_all_entries,
)

from bhyve_snaptest import REPO_ROOT
from bhyve_snaptest.ledger import LEDGER_FILE
from bhyve_snaptest.options import ScenarioOptions
from bhyve_snaptest.results import TestResults

pytestmark = [pytest.mark.scenario, pytest.mark.selftest]

#: How the QEMU driver forwards each guest's SSH port (for the no-collision check).
HOSTFWD = re.compile(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-")


def clean(lab: FaultLab, *args: str) -> str:
    """``bhyve-snaptest clean`` on the inner runs' state directory; its output."""
    env = {**os.environ, "BHYVE_SNAPTEST_STATE": str(lab.state_dir)}
    result = subprocess.run([sys.executable, "-m", "bhyve_snaptest.cli", "clean", *args],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"clean failed: {result.stderr}"
    return result.stdout


@contextlib.contextmanager
def frozen(*runs: InnerRun):
    """Stop the inner pytests (not their VMs) for a moment, so that their files stand
    still while they are compared; they go on afterwards, whatever happens. SIGSTOP takes
    effect asynchronously: the look waits until the kernel shows every one stopped."""
    for run in runs:
        os.kill(run.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not all(psutil.Process(run.pid).status() == psutil.STATUS_STOPPED
                      for run in runs):
            assert time.monotonic() < deadline, "the inner runs did not stop"
            time.sleep(0.01)
        yield
    finally:
        for run in runs:
            os.kill(run.pid, signal.SIGCONT)


def run_dir_of(lab: FaultLab, run: InnerRun) -> str:
    """The name of an inner run's ledger directory (``<date>T<time>-<pid>``)."""
    names = [p.parent.name for p in (lab.state_dir / "runs").glob(f"*-{run.pid}/{LEDGER_FILE}")]
    assert len(names) == 1, f"inner run {run.label}: ledger directories {names}"
    return names[0]


def start_two_seeds(lab: FaultLab, scenario: ScenarioOptions) -> tuple[InnerRun, InnerRun]:
    """Two seed scenarios at once; returns once both guests are busy."""
    first, second = lab.start("first", SEED_SCENARIO), lab.start("second", SEED_SCENARIO)
    for run in (first, second):
        run.wait_for_command(WORKLOADS_STARTED, scenario.boot_timeout_s + 600, lab.watch)
    return first, second


def look(lab: FaultLab, run: InnerRun) -> tuple[list[int], dict[str, tuple[float, ...]]]:
    """An inner run's processes (pids: their state changes as they run) and files."""
    pids = sorted(int(p.split(" ", 1)[0]) for p in lab.watch.listing(run.pid).processes)
    return pids, lab.watch.fingerprint(run.pid)


def released_by_its_run(run_dir: Path, pids: list[int]) -> list[int]:
    """Those of ``pids`` whose process entries the run released in its own ledger (a
    suspend ends the hypervisor, and the harness releases it then)."""
    entries = read_all_entries(run_dir / LEDGER_FILE)
    released = {e["id"] for e in entries if e.get("kind") == "released"}
    return sorted(e["pid"] for e in entries
                  if e.get("kind") == "process" and e.get("pid") in pids and e["id"] in released)


def hypervisor_processes(lab: FaultLab, run: InnerRun) -> list[int]:
    """The pids of the inner run's processes other than its pytest (its hypervisors)."""
    return [pid for pid in (int(p.split(" ", 1)[0]) for p in lab.watch.listing(run.pid).processes)
            if pid != run.pid]


@pytest.mark.timeout(1800)
def test_clean_during_two_runs_touches_neither(lab: FaultLab, scenario: ScenarioOptions,
                                               test_results: TestResults) -> None:
    first, second = start_two_seeds(lab, scenario)
    watch = lab.watch
    with frozen(first, second):
        before = {run.label: look(lab, run) for run in (first, second)}
        output = clean(lab)
        after = {run.label: look(lab, run) for run in (first, second)}
    test_results.metrics["clean_output"] = output.splitlines()
    test_results.metrics["files_before_clean"] = {
        label: len(prints) for label, (_, prints) in before.items()}
    for run in (first, second):
        pids, prints = before[run.label]
        assert len(pids) > 1, f"{run.label}: no hypervisor seen: {pids}"
        assert any(f.endswith(LEDGER_FILE) for f in prints), f"{run.label}: no ledger seen"
        assert after[run.label] == before[run.label], \
            f"clean touched {run.label}:\nbefore {before[run.label]}\nafter {after[run.label]}"
    assert output.startswith("nothing to clean"), f"clean removed something:\n{output}"

    for run in (first, second):
        status = run.wait_exit(scenario.step_timeout_s * 3, watch)
        assert status == pytest.ExitCode.OK, f"{run.label} failed:\n{run.output_tail()}"
    ports = [HOSTFWD.findall(run.commands_log()) for run in (first, second)]
    test_results.metrics["forwarded_ports"] = ports
    if all(ports):
        assert not set(ports[0]) & set(ports[1]), f"the two runs shared a port: {ports}"
    assert_nothing_left(watch, "after both runs")


@pytest.mark.timeout(1800)
def test_a_killed_run_is_cleaned_while_another_runs_on(lab: FaultLab,
                                                       scenario: ScenarioOptions,
                                                       test_results: TestResults) -> None:
    killed, survivor = start_two_seeds(lab, scenario)
    watch = lab.watch
    dead_dir, living_dir = run_dir_of(lab, killed), run_dir_of(lab, survivor)
    assert hypervisor_processes(lab, killed), "no hypervisor of the run to kill"
    survivor_hypervisors = hypervisor_processes(lab, survivor)
    assert survivor_hypervisors, "no hypervisor of the surviving run"

    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait_exit(30, watch) == -signal.SIGKILL
    assert watch.listing(killed.pid).files, "the killed run left no ledger to clean"
    output = clean(lab)
    test_results.metrics["clean_output"] = output.splitlines()

    assert f"removed ledger of dead run {dead_dir}" in output, output
    assert living_dir not in output, f"clean touched the living run:\n{output}"
    deadline = time.monotonic() + 30  # the dead run's hypervisors end with their group
    while watch.listing(killed.pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert not watch.listing(killed.pid), \
        f"the killed run's leftovers survived the clean:{watch.listing(killed.pid)}"
    # A hypervisor the survivor no longer has must have been ended by the survivor itself
    # (its suspend ends it, and its harness then releases it in its own ledger, a moment
    # later under load); one the clean killed would also fail the survivor's run below.
    gone = sorted(set(survivor_hypervisors) - set(hypervisor_processes(lab, survivor)))
    survivor_dir = lab.state_dir / "runs" / living_dir
    deadline = time.monotonic() + 30
    while released_by_its_run(survivor_dir, gone) != gone and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert released_by_its_run(survivor_dir, gone) == gone, \
        f"the clean touched the living run's hypervisor: {gone} ended, not by its run"

    status = survivor.wait_exit(scenario.step_timeout_s * 3, watch)
    assert status == pytest.ExitCode.OK, f"the surviving run failed:\n{survivor.output_tail()}"
    assert_nothing_left(watch, "after the surviving run")


def _first_hypervisor_released(run_dir: Path) -> Path | None:
    """The first checkpoint file of a VM whose first hypervisor process is released in the
    ledger (it ended after a suspend), once that has happened."""
    entries = read_all_entries(run_dir / LEDGER_FILE)
    process = next((e for e in entries if e.get("kind") == "process"), None)
    if process is None or {"kind": "released", "id": process["id"]} not in entries:
        return None
    found = sorted(run_dir.glob("scratch/*/cycle1.ckp"))
    return found[0] if found else None


@pytest.mark.timeout(1200)
def test_a_failed_seed_keeps_its_checkpoint_disk_and_workload_logs(
        lab: FaultLab, scenario: ScenarioOptions, test_results: TestResults) -> None:
    """The checkpoint is cut to half while the VM is suspended: the restore fails, and the
    failure message names the kept disk and checkpoint, which are in the results."""
    # Suspended long enough to cut the checkpoint; the ping must outlast it (options.py).
    run = lab.start("damaged", SEED_SCENARIO, "--keep-scratch", "on-failure",
                    "--suspended-for", "60", "--ping-count", "100")
    run.wait_for_command(WORKLOADS_STARTED, scenario.boot_timeout_s + 600, lab.watch)
    run_dir = lab.state_dir / "runs" / run_dir_of(lab, run)
    deadline = time.monotonic() + scenario.step_timeout_s
    checkpoint = None
    while checkpoint is None:
        assert time.monotonic() < deadline, "the inner run never finished its suspend"
        assert run.popen.poll() is None, f"the inner run ended early:\n{run.output_tail()}"
        checkpoint = _first_hypervisor_released(run_dir)
        time.sleep(POLL_S)
    size = checkpoint.stat().st_size
    os.truncate(checkpoint, size // 2)
    test_results.metrics["checkpoint_cut"] = {"path": str(checkpoint), "from": size}

    status = run.wait_exit(scenario.step_timeout_s + TEARDOWN_S, lab.watch)
    output = run.output()
    assert status == pytest.ExitCode.TESTS_FAILED, f"inner run ended {status}:\n{output[-3000:]}"
    assert "RestoreError" in output, f"the restore did not fail:\n{output[-3000:]}"
    kept_lines = re.findall(r"kept \(disk, checkpoints\): (\S+)", output)
    assert len(kept_lines) == 1, f"the failure message names no kept scratch:\n{output[-3000:]}"
    kept = Path(kept_lines[0])
    test_results.metrics["kept"] = sorted(p.name for p in kept.iterdir())
    assert (kept / "data.img").is_file(), f"no disk in {kept}"
    assert (kept / "cycle1.ckp").stat().st_size == size // 2, "the checkpoint is not the one"
    logs = kept.parent.parent / "workloads"
    test_results.metrics["workload_logs"] = sorted(str(p.relative_to(logs))
                                                  for p in logs.rglob("*"))
    assert (logs / "copy" / "phase").is_file() or (logs / "NOT-COLLECTED").is_file(), \
        f"no workload logs and no reason in {logs}"
    if scenario.hypervisor == "qemu":  # the Linux guest's disk can be read offline
        assert (logs / "FROM-DISK").is_file(), f"logs not read from the disk: {logs}"
        # What the guest had written to its disk before the suspend (the guest flushes
        # every few seconds; the workloads started well before): each one's phase.
        for workload in ("copy", "ping", "memory"):
            assert (logs / workload / "phase").read_text().strip(), f"{workload}: no phase"
    # Kept evidence is by design not a leftover; the lab's check excludes the results.
    assert_nothing_left(lab.watch, "after the failed run")
