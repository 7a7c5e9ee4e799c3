"""The harness itself under faults: kill -9, pytest-timeout, Ctrl-C and SIGTERM.

The README promises that nothing outlives a run: teardown removes every VM and file after a
pass, a failure, a pytest-timeout or Ctrl-C, and after a ``kill -9`` the next run removes
what the dead run's ledger lists. These tests check that promise from the outside. Each one
runs an *inner* pytest (the seed scenario, or a tiny test written here) as a subprocess with
its own state directory and results directory, hits it with a fault at a known moment (an
event in its ``commands.log``, never a guessed sleep), and then lists everything of the
harness that is left: processes of the inner runs and files under their state directory.
That listing must be non-empty while the inner run works (else an empty one proves nothing)
and empty once the harness had its chance to clean up.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from fixtures.config import GuestImage
from fixtures.drivers.base import HypervisorDriver
from fixtures.ledger import LEDGER_FILE
from fixtures.options import REPO_ROOT, ScenarioOptions, add_options
from fixtures.results import TestResults

pytestmark = pytest.mark.scenario

SEED_SCENARIO = REPO_ROOT / "tests" / "scenarios" / "test_suspend_restore.py"

#: The inner seed runs are hit as soon as their workloads start, so the copy's size only
#: sets how long its source takes to write: small keeps them short.
INNER_COPY_SIZE = "64M"

#: The commands.log line that starts the copy workload in the guest: from then on the VM is
#: busy and the scenario is under way (the install lines name ``copy.sh)`` or ``copy.sh.tmp``).
WORKLOADS_STARTED = re.compile(r"guest\$ .*\bsh \S*/copy\.sh ")

#: What the plugin prints when the session-start sweep removed a dead run's leftovers.
SWEEP_BANNER = "removed leftovers of killed runs"

#: Options the inner run sets itself rather than taking from the outer run: its own results,
#: a small copy, and never kept scratch space (kept scratch is a leftover by definition).
INNER_OWN_OPTIONS = frozenset({"results_dir", "copy_size", "keep_scratch", "fail_on_skip",
                               "image"})

#: The run after a kill -9: a whole VM lifecycle (boot, suspend, restore, a guest command)
#: in the dead run's state directory, without the seed's workloads, whose sizing is the
#: seed scenario's business and would make this case fail for reasons of its own.
LIFECYCLE_TEST = '''\
def test_lifecycle_after_a_killed_run(vm_booted, scenario):
    vm, timeout = vm_booted, scenario.step_timeout_s
    checkpoint = vm.suspend(vm.workdir / "suspend.ckp", timeout)
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
    vm.suspend(vm.workdir / "suspend.ckp", scenario.step_timeout_s)
'''

#: How long the harness may take to end an inner run after a signal: teardown asks the
#: hypervisor to stop, waits for it, and kills its process group (TERM, grace, KILL).
TEARDOWN_S = 180.0
#: Poll interval of the waits on files and processes (each wait is bounded by a deadline).
POLL_S = 0.2


# -- everything of the harness ---------------------------------------------------------------


@dataclass(frozen=True)
class Leftovers:
    """What of the inner runs exists right now: process lines and paths."""

    processes: tuple[str, ...]
    files: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.processes or self.files)

    def as_dict(self) -> dict[str, list[str]]:
        return {"processes": list(self.processes), "files": list(self.files)}

    def __str__(self) -> str:
        if not self:
            return "nothing"
        lines = [f"process {p}" for p in self.processes] + [f"file {f}" for f in self.files]
        return "\n  ".join(["", *lines])


@dataclass
class HarnessWatch:
    """Knows how to recognise every process and file of the inner runs of one test.

    A process belongs to them if it is an inner pytest itself, lives in the process group or
    session of an inner pytest or of a hypervisor an inner ledger recorded, or names the
    state directory or an inner VM (``snaptest-<inner pid>-<n>``) on its command line; the
    last two also catch a process started but not yet recorded when a ``kill -9`` hit.
    Ledgers vanish when they are cleaned, so every entry ever seen is remembered.
    """

    state_dir: Path
    owners: set[int] = field(default_factory=set)
    #: Recorded process-group leaders: pid -> create time (to ignore a recycled pid).
    groups: dict[int, float] = field(default_factory=dict)
    #: Recorded paths, also those outside the state directory.
    paths: set[Path] = field(default_factory=set)

    def refresh(self) -> None:
        """Remember what the inner ledgers list now (including released entries: a
        released process group with a live member is a leftover too)."""
        runs = self.state_dir / "runs"
        for ledger in runs.glob(f"*/{LEDGER_FILE}") if runs.is_dir() else ():
            for entry in read_all_entries(ledger):
                if entry.get("kind") in ("process", "owner"):
                    self.groups.setdefault(int(entry["pid"]), float(entry["create_time"]))
                elif entry.get("kind") == "path":
                    self.paths.add(Path(entry["path"]))

    def listing(self) -> Leftovers:
        """Everything of the inner runs that exists now."""
        self.refresh()
        return Leftovers(tuple(self._processes()), tuple(self._files()))

    def _belongs(self, proc: psutil.Process, tokens: Iterable[str]) -> bool:
        if proc.pid in self.owners:
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            for leader in {os.getpgid(proc.pid), os.getsid(proc.pid)}:
                if leader in self.owners:  # each inner run leads a session of its own
                    return True
                started = self.groups.get(leader)
                if started is not None and proc.create_time() >= started - 1.0:
                    return True
        cmdline = " ".join(proc.cmdline())
        return any(token in cmdline for token in tokens)

    def _processes(self) -> Iterator[str]:
        tokens = [f"{self.state_dir}/", *(f"snaptest-{pid}-" for pid in self.owners)]
        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                # A zombie holds nothing but its pid until its parent (or init) reaps it.
                if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if self._belongs(proc, tokens):
                    yield (f"{proc.pid} (group {os.getpgid(proc.pid)}, {proc.status()}): "
                           f"{' '.join(proc.cmdline())[:300]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                continue

    def _files(self) -> Iterator[str]:
        runs = self.state_dir / "runs"
        if runs.is_dir():
            yield from sorted(str(p) for p in runs.rglob("*"))
        for path in sorted(self.paths):
            if not path.is_relative_to(runs) and (path.exists() or path.is_symlink()):
                yield str(path)

    def pids(self) -> list[int]:
        """The pids of the processes :meth:`listing` would show."""
        return [int(line.split(" ", 1)[0]) for line in self.listing().processes]

    def force_cleanup(self) -> None:
        """Kill what the harness failed to remove and delete the state directory, so that
        a failing case (or a deliberately broken harness) does not leave VMs running on a
        shared machine. Only processes of the inner runs are touched, one pid at a time."""
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            procs = []
            for pid in pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs.append(psutil.Process(pid))
            psutil.wait_procs(procs, timeout=10)
        # Recorded paths outside the state directory (a checkpoint directory given on the
        # command line) stay: deleting in a user's directory is the harness's job, not ours.
        shutil.rmtree(self.state_dir, ignore_errors=True)


def write_inner_test(directory: Path, name: str, text: str) -> Path:
    """Write a tiny inner test file into its own directory (no conftest.py around it)."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def read_all_entries(ledger: Path) -> list[dict]:
    """Every entry of a ledger file, released or not; torn lines (kill -9) are skipped."""
    entries = []
    with contextlib.suppress(FileNotFoundError):
        for line in ledger.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
    return entries


# -- inner runs -------------------------------------------------------------------------------


def _default_signals() -> None:
    """Runs in the inner pytest before exec. A process started in the background by a
    non-interactive shell inherits SIGINT (and under nohup SIGHUP) ignored, and ignored
    signals survive exec: the inner run would shrug off the very Ctrl-C under test, and its
    hypervisors the hangup of their terminal."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class InnerRun:
    """One inner pytest process, its terminal output and its results directory."""

    label: str
    popen: subprocess.Popen[bytes]
    output_file: Path
    results_dir: Path
    started: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def commands_log(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.results_dir.glob("*/commands.log")))

    def wait_for_command(self, pattern: re.Pattern[str], timeout: float,
                         watch: HarnessWatch) -> float:
        """Wait until the inner run's commands.log shows ``pattern``; returns the seconds
        since the run started. Fails at once if the run ends first. The ledgers are read
        on every round, so entries that a later cleanup deletes are known."""
        deadline = time.monotonic() + timeout
        while True:
            watch.refresh()
            if pattern.search(self.commands_log()):
                return round(time.monotonic() - self.started, 3)
            if self.popen.poll() is not None:
                pytest.fail(f"inner run {self.label} ended (exit {self.popen.returncode}) "
                            f"before {pattern.pattern!r}:\n{self.output_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"inner run {self.label}: no {pattern.pattern!r} in commands.log "
                            f"within {timeout:.0f} s:\n{self.commands_log()[-2000:]}")
            time.sleep(POLL_S)

    def wait_exit(self, timeout: float, watch: HarnessWatch) -> int:
        """The inner run's exit code; fails if it still runs after ``timeout``. The ledgers
        are read meanwhile: a run that passes removes its own before anyone looks."""
        deadline = time.monotonic() + timeout
        while True:
            watch.refresh()
            with contextlib.suppress(subprocess.TimeoutExpired):
                return self.popen.wait(POLL_S)
            if time.monotonic() > deadline:
                pytest.fail(f"inner run {self.label} still runs after {timeout:.0f} s:\n"
                            f"{self.output_tail()}")

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the inner run's process group, as a terminal's Ctrl-C or a CI
        runner's cancel does (the hypervisors are in sessions of their own)."""
        os.killpg(self.pid, sig)


@dataclass
class FaultLab:
    """Starts inner runs sharing one state directory, and cleans up after all of them."""

    tmp_path: Path
    state_dir: Path
    forwarded: list[str]
    watch: HarnessWatch
    runs: list[InnerRun] = field(default_factory=list)

    def start(self, label: str, target: Path, *extra: str) -> InnerRun:
        """Start an inner pytest on ``target`` with the outer run's host options."""
        results = self.tmp_path / f"results-{label}"
        output = self.tmp_path / f"{label}.out"
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                "-p", "fixtures.plugin",  # a target outside the repo sees no conftest.py
                "-c", str(REPO_ROOT / "pyproject.toml"), "--rootdir", str(REPO_ROOT),
                str(target), "--results-dir", str(results), "--copy-size", INNER_COPY_SIZE,
                "--fail-on-skip", *self.forwarded, *extra]
        env = {**os.environ, "BHYVE_SNAPTEST_STATE": str(self.state_dir)}
        env.pop("PYTEST_ADDOPTS", None)  # the inner command line is the whole truth
        with output.open("wb") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            # preexec_fn is unsafe only while other threads run; this test starts none (it
            # boots no VM itself, and pytest-timeout uses its signal method here).
            popen = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True,
                                     preexec_fn=_default_signals)  # noqa: PLW1509
        run = InnerRun(label, popen, output, results, time.monotonic())
        self.runs.append(run)
        self.watch.owners.add(run.pid)
        return run

    def close(self) -> None:
        """End inner runs still going (the outer test failed or was interrupted) the way a
        user would, SIGTERM and time for teardown, then remove whatever is left."""
        for run in self.runs:
            if run.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    run.signal_group(signal.SIGTERM)
                try:
                    run.popen.wait(TEARDOWN_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        run.signal_group(signal.SIGKILL)
                    run.popen.wait(30)
        self.watch.force_cleanup()


def forwarded_options(config: pytest.Config, scenario: ScenarioOptions) -> list[str]:
    """The outer run's harness options as inner command-line arguments.

    The option list comes from the harness's own declaration, so every host option
    (hypervisor, binaries, firmware, accelerator, guest size, timeouts) reaches the inner
    run without this test naming any of them; the image is passed resolved.
    """
    declared: list[tuple[tuple[str, ...], dict]] = []
    add_options(lambda *flags, **kwargs: declared.append((flags, kwargs)))
    args: list[str] = []
    for flags, kwargs in declared:
        dest = kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")
        if dest in INNER_OWN_OPTIONS:
            continue
        value = config.getoption(dest)
        if value is None or value is False:
            continue
        if kwargs.get("action") == "store_true":
            args.append(flags[0])
        else:
            args += [flags[0], str(value.absolute() if isinstance(value, Path) else value)]
    return [*args, "--image", str(scenario.image.absolute())]


@pytest.fixture
def lab(tmp_path: Path, pytestconfig: pytest.Config, scenario: ScenarioOptions,
        hypervisor: HypervisorDriver, guest_image: GuestImage) -> Iterator[FaultLab]:
    """A place for inner runs; ``hypervisor`` and ``guest_image`` make the case skip, with
    the reason, on a host that cannot boot VMs, instead of failing inside the inner run.

    The state directory is a short one under the system's temporary directory, not in
    tmp_path: hypervisor control sockets live in the run's scratch directory, and AF_UNIX
    socket paths are limited to 104-108 bytes, which tmp_path plus the run and VM directory
    names exceeds.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="sf-")).resolve()
    lab = FaultLab(tmp_path, state_dir, forwarded_options(pytestconfig, scenario),
                   HarnessWatch(state_dir))
    try:
        yield lab
    finally:
        lab.close()


def ended(pid: int) -> bool:
    """True once ``pid`` no longer runs. A zombie has ended: when its parent was killed,
    when init reaps it is init's business, not the harness's."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_ended(pids: Iterable[int], since: float, timeout: float) -> dict[str, float | None]:
    """Wait for processes to end by themselves; each pid maps to when it was first seen
    ended, in seconds after ``since`` (a monotonic time), or None if it still runs."""
    pending, result = set(pids), {}
    deadline = time.monotonic() + timeout
    while pending:
        for pid in sorted(pending):
            if ended(pid):
                result[str(pid)] = round(time.monotonic() - since, 3)
                pending.discard(pid)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    result.update({str(pid): None for pid in pending})
    return result


def sweep_lines(output: str) -> list[str]:
    """The lines the session-start sweep printed under its banner."""
    lines = iter(output.splitlines())
    if not any(SWEEP_BANNER in line for line in lines):
        return []
    return [line.strip() for line in itertools.takewhile(lambda ln: ln.startswith("  "), lines)]


def assert_nothing_left(watch: HarnessWatch, when: str) -> Leftovers:
    """The after-listing must be empty; on failure, name every leftover."""
    left = watch.listing()
    assert not left, f"left behind {when}:{left}"
    return left


def assert_listing_sees_the_run(before: Leftovers, watch: HarnessWatch) -> None:
    """The before-listing must show a hypervisor (a process other than an inner pytest)
    and the run's ledger, or the empty after-listing would prove nothing about cleanup."""
    others = [p for p in before.processes if int(p.split(" ", 1)[0]) not in watch.owners]
    assert others, f"the harness listing sees no hypervisor of the running inner run:{before}"
    assert any(f.endswith(LEDGER_FILE) for f in before.files), \
        f"the harness listing sees no ledger of the running inner run:{before}"


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
    hypervisors = [pid for pid in watch.groups if pid != killed.pid]
    metrics["hypervisor_ended_after_kill_s"] = wait_ended(hypervisors, killed_at, 15)
    metrics["hypervisor_log_tail"] = [
        line for log in sorted(killed.results_dir.glob("*/hypervisor.log"))
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
