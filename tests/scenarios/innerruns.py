"""Inner runs: the harness run as a subprocess and watched from outside.

Scenarios about the harness itself (faults, concurrent jobs) run an *inner* pytest (the
seed scenario, or a tiny test written for the case) with its own state and results
directories, act on it at a known moment (an event in its ``commands.log``, never a guessed
sleep), and list everything of the harness that exists: processes of the inner runs and
files under their state directory, for all inner runs or for one. A listing must be
non-empty while an inner run works (else an empty one proves nothing) and empty once the
harness had its chance to clean up.
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
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from bhyve_snaptest import REPO_ROOT
from bhyve_snaptest.emulated_bhyve import INSTALL_DIR, PERSONALITIES, PROGRAMS, installation_key
from bhyve_snaptest.evidence import KEPT_FILE, KEPT_LOCK
from bhyve_snaptest.ledger import CREATING_LOCK, LEDGER_FILE
from bhyve_snaptest.options import ScenarioOptions, add_options

SEED_SCENARIO = REPO_ROOT / "tests" / "scenarios" / "test_suspend_restore.py"

#: The inner seed runs are hit as soon as their workloads start, so the copy only has to
#: outlast the harness's step from "copy running" to the suspend while the inner
#: pytest is stopped (test_concurrent_runs freezes it) and several VMs share two cores.
#: 64M once did, when the guest spent seconds making the source first; now the host
#: makes it (bhyve_snaptest.copysource) and the copy starts at once, and 64M is copied in
#: under two seconds. The seed's 500M costs an inner run no time: it waits for its ping.
INNER_COPY_SIZE = "500M"

#: The commands.log line that starts the copy workload in the guest: from then on the VM is
#: busy and the scenario is under way (the install lines name ``copy.sh)`` or ``copy.sh.tmp``).
WORKLOADS_STARTED = re.compile(r"guest\$ .*\bsh \S*/copy\.sh ")

#: What the plugin prints when the session-start sweep removed a dead run's leftovers.
SWEEP_BANNER = "removed leftovers of killed runs"

#: Options the inner run sets itself rather than taking from the outer run: its own results,
#: a small copy, and never kept scratch space (kept scratch is a leftover by definition).
INNER_OWN_OPTIONS = frozenset({"results_dir", "copy_size", "keep_scratch", "fail_on_skip",
                               "image"})

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
    """Knows how to recognise every process and file of the inner runs of one test, and
    which inner run (owner pid) each belongs to.

    A process belongs to an inner run if it is that inner pytest, lives in its process group
    or session or in that of a hypervisor its ledger recorded, or names its VMs
    (``snaptest-<inner pid>-<n>``) on its command line; with all runs watched, also a
    process naming the state directory. The last two also catch a process started but not
    yet recorded when a ``kill -9`` hit. Ledgers vanish when they are cleaned, so every
    entry ever seen is remembered.
    """

    state_dir: Path
    owners: set[int] = field(default_factory=set)
    #: Recorded process-group leaders -> the inner run (owner pid) that recorded them.
    groups: dict[int, int] = field(default_factory=dict)
    #: Recorded paths, also those outside the state directory -> their inner run.
    paths: dict[Path, int] = field(default_factory=dict)

    def refresh(self) -> None:
        """Remember what the inner ledgers list now (including released entries: a
        released process group with a live member is a leftover too)."""
        runs = self.state_dir / "runs"
        for ledger in runs.glob(f"*/{LEDGER_FILE}") if runs.is_dir() else ():
            entries = read_all_entries(ledger)
            owner = next((int(e["pid"]) for e in entries if e.get("kind") == "owner"), None)
            if owner is None:
                continue
            for entry in entries:
                if entry.get("kind") == "process":
                    self.groups.setdefault(int(entry.get("pgid", entry["pid"])), owner)
                elif entry.get("kind") == "path":
                    self.paths.setdefault(Path(entry["path"]), owner)

    def listing(self, owner: int | None = None) -> Leftovers:
        """Everything of the inner runs (or of the one whose pytest is ``owner``) that
        exists now."""
        self.refresh()
        owners = self.owners if owner is None else {owner}
        return Leftovers(tuple(self._processes(owners, everything=owner is None)),
                         tuple(self._files(owners, everything=owner is None)))

    def _belongs(self, proc: psutil.Process, owners: set[int], tokens: Iterable[str]) -> bool:
        if proc.pid in owners:
            return True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            for leader in {os.getpgid(proc.pid), os.getsid(proc.pid)}:
                # each inner run leads a session of its own, so do its hypervisors
                if leader in owners or self.groups.get(leader) in owners:
                    return True
        cmdline = " ".join(proc.cmdline())
        return any(token in cmdline for token in tokens)

    def _processes(self, owners: set[int], *, everything: bool) -> Iterator[str]:
        tokens = [f"snaptest-{pid}-" for pid in owners]
        if everything:
            tokens.append(f"{self.state_dir}/")
        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                # A zombie holds nothing but its pid until its parent (or init) reaps it.
                if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if self._belongs(proc, owners, tokens):
                    yield (f"{proc.pid} (group {os.getpgid(proc.pid)}, {proc.status()}): "
                           f"{' '.join(proc.cmdline())[:300]}")
            except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                continue

    def _files(self, owners: set[int], *, everything: bool) -> Iterator[str]:
        """Files under the state directory (a run's own: its run directory, named
        ``<date>-<pid>``), and recorded paths elsewhere that still exist. The one file that
        stays by design, the runs' shared bookkeeping (the creation lock, the list of kept
        evidence, the emulated bhyve's two programs), is not a leftover."""
        found: list[Path] = []
        runs = self.state_dir / "runs"
        bookkeeping = {runs / CREATING_LOCK, self.state_dir / KEPT_FILE,
                       self.state_dir / KEPT_LOCK,
                       *(self.state_dir / INSTALL_DIR / installation_key() / personality
                         / program for personality in PERSONALITIES for program in PROGRAMS)}
        if everything and self.state_dir.is_dir():
            found += [p for p in self.state_dir.rglob("*")
                      if (p not in bookkeeping and p.is_file()) or p.is_symlink()]
        elif runs.is_dir():
            found += [p for run in runs.iterdir() if _run_owner(run.name) in owners
                      for p in [run, *run.rglob("*")]]
        found += [path for path, owner in self.paths.items()
                  if owner in owners and not path.is_relative_to(self.state_dir)
                  and (path.exists() or path.is_symlink())]
        yield from sorted(str(p) for p in found)

    def fingerprint(self, owner: int) -> dict[str, tuple[float, ...]]:
        """Each file of one inner run with its inode and, outside the VMs' scratch
        directories (whose disks the running guests write), size and modification time:
        equal fingerprints mean nothing removed, replaced or changed them meanwhile."""
        prints: dict[str, tuple[float, ...]] = {}
        for name in self.listing(owner).files:
            with contextlib.suppress(FileNotFoundError):
                st = Path(name).lstat()
                written_by_a_guest = "scratch" in Path(name).parts
                prints[name] = (st.st_ino,) if written_by_a_guest else \
                    (st.st_ino, st.st_size, st.st_mtime)
        return prints

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


def _run_owner(run_dir_name: str) -> int | None:
    """The pid in a run directory's name (``<date>T<time>-<pid>`` or with ``.N``)."""
    match = re.match(r"\d{8}T\d{6}-(\d+)", run_dir_name)
    return int(match.group(1)) if match else None


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
                       for p in sorted(self.results_dir.glob("*/*/commands.log"))
                       if not p.parent.parent.is_symlink())  # not again through "latest"

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
                "-p", "bhyve_snaptest.plugin",  # a target outside the repo sees no conftest.py
                "-c", str(REPO_ROOT / "pyproject.toml"), "--rootdir", str(REPO_ROOT),
                str(target), "--results-dir", str(results), "--copy-size", INNER_COPY_SIZE,
                "--keep-scratch", "never", "--fail-on-skip", *self.forwarded, *extra]
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
