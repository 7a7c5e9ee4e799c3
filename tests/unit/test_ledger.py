"""The ledger lets a later run remove what a killed run left behind, and nothing else.

A run is alive while it holds its owner lock; clocks and pids decide nothing. The owners
here are real child processes that open a ledger and then wait, so that killing them is
exactly what ``kill -9`` does to a run.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bhyve_snaptest import ledger as ledger_module
from bhyve_snaptest.ledger import (
    CREATING_LOCK,
    LEDGER_FILE,
    NEW_PREFIX,
    OWNER_LOCK,
    Ledger,
    RunDirectoryVanished,
    kill_process_group,
    read_ledger,
    run_is_alive,
    sweep,
)
from bhyve_snaptest.locks import hold
from bhyve_snaptest.process_identity import ProcessIdentity

#: A run in a child process: opens a ledger under argv[1], records argv[2:] as paths and
#: the process groups named by PID=... arguments, prints its run directory, then waits.
OWNER_SCRIPT = textwrap.dedent("""\
    import sys
    from pathlib import Path
    import psutil
    from bhyve_snaptest.ledger import Ledger
    from bhyve_snaptest.process_identity import ProcessIdentity
    ledger = Ledger.open_new(Path(sys.argv[1]))
    for arg in sys.argv[2:]:
        if arg.startswith("PID="):
            pid = int(arg[4:])
            ledger.record_process(ProcessIdentity.capture(pid, psutil.Process(pid).cmdline()),
                                  "stand-in")
        else:
            ledger.record_path(Path(arg))
    print(ledger.run_dir, flush=True)
    sys.stdin.read()
""")


class Owner:
    """A run owned by a child process; ``kill()`` is the run's ``kill -9``."""

    def __init__(self, root, *records: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(root),
                                         *records], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.run_dir = type(root)(self.process.stdout.readline().strip())
        assert self.run_dir.is_dir(), "the owner did not start its run"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def end(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def owners():
    started: list[Owner] = []
    yield started
    for owner in started:
        owner.end()


def _session_leader_with_helper():
    """A session leader with a child, like a hypervisor and its migration helper."""
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    helpers = []
    while not helpers:
        helpers = psutil.Process(leader.pid).children()
    return leader, helpers


def test_sweep_kills_process_group_and_removes_files_of_a_killed_run(tmp_path, owners):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "disk.img").write_bytes(b"x")
    leader, helpers = _session_leader_with_helper()
    owner = Owner(tmp_path, str(scratch), f"PID={leader.pid}")
    owners.append(owner)

    assert sweep(tmp_path) == [], "a living run was swept"
    owner.kill()
    report = sweep(tmp_path)

    leader.wait(timeout=10)
    _, alive = psutil.wait_procs(helpers, timeout=5)
    assert alive == [], "the helper in the group survived"
    assert not scratch.exists()
    assert not owner.run_dir.exists()
    assert any("killed process group" in line for line in report)
    assert f"removed ledger of dead run {owner.run_dir.name}" in report


def test_a_locked_run_is_alive_whatever_its_start_time_says(tmp_path, owners, monkeypatch):
    """What the old check relied on (psutil's create_time, derived from the boot time,
    which moves when the wall clock is stepped) is shifted by 1 s: the run is alive as
    long as it holds its lock, and dead the moment its owner is killed."""
    kept = tmp_path / "kept"
    kept.mkdir()
    owner = Owner(tmp_path, str(kept))
    owners.append(owner)
    real_create_time = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time",
                        lambda self: real_create_time(self) + 1.0)

    assert run_is_alive(owner.run_dir)
    assert sweep(tmp_path) == []
    assert kept.exists() and owner.run_dir.exists()

    owner.kill()
    assert not run_is_alive(owner.run_dir)
    assert sweep(tmp_path) == [f"removed {kept}",
                               f"removed ledger of dead run {owner.run_dir.name}"]
    assert not kept.exists()


def test_sweep_leaves_runs_of_living_owners_alone(tmp_path):
    ledger = Ledger.open_new(tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    ledger.record_path(kept)

    assert sweep(tmp_path) == []
    assert kept.exists()
    ledger.close()
    assert not kept.exists()
    assert list((tmp_path / "runs").iterdir()) == [tmp_path / "runs" / CREATING_LOCK]


def test_a_run_directory_appears_complete(tmp_path):
    """Only a locked directory with its owner entry ever has a run's name."""
    ledger = Ledger.open_new(tmp_path, run_id="20261204T120000-1")
    try:
        assert ledger.run_dir.name == "20261204T120000-1"
        owner, entries = read_ledger(ledger.path)
        assert owner["pid"] == os.getpid() and entries == []
        assert run_is_alive(ledger.run_dir)
        again = Ledger.open_new(tmp_path, run_id="20261204T120000-1")
        assert again.run_dir.name == "20261204T120000-1.2", "a taken name is never shared"
        again.close()
    finally:
        ledger.close()


def test_unfinished_creations_wait_for_creators_to_finish(tmp_path):
    """A hidden staging directory is removed only when no creation is under way."""
    runs = tmp_path / "runs"
    staging = runs / f"{NEW_PREFIX}abandoned"
    staging.mkdir(parents=True)
    creating = hold(runs / CREATING_LOCK, shared=True)
    try:
        assert sweep(tmp_path) == []
        assert staging.exists()
    finally:
        creating.release(remove=False)
    assert sweep(tmp_path) == [f"removed unfinished run directory {staging.name}"]
    assert not staging.exists()


def test_released_entries_are_not_removed(tmp_path):
    ledger = Ledger.open_new(tmp_path)
    released = tmp_path / "released"
    released.mkdir()
    ledger.release(ledger.record_path(released))

    _, entries = read_ledger(ledger.path)

    assert entries == []
    ledger.close()
    assert released.exists()


def _ledger_with(tmp_path, entry: dict):
    """A dead run's ledger (no lock file, owner pid gone) holding one entry."""
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    entries = [{"kind": "owner", "pid": 999999999, "create_time": 1.0}, {"id": 1, **entry}]
    (run_dir / LEDGER_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))
    return run_dir


@pytest.mark.parametrize("change", ["argv", "start_ticks", "pgid", "no identity"])
def test_a_process_that_is_not_the_recorded_one_is_never_killed(tmp_path, change):
    """A reused pid: another command line, another start, another group, or an entry that
    never recorded an identity (an older version's). The bystander must live."""
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        identity = ProcessIdentity.capture(bystander.pid, ["sleep", "300"]).as_entry()
        if change == "argv":
            identity["argv"] = ["qemu-system-x86_64", "-name", "snaptest-1-1"]
        elif change == "start_ticks":
            identity["start_ticks"] = (identity["start_ticks"] or 0) + 1
        elif change == "pgid":
            identity["pgid"] = identity["pgid"] + 1
        else:
            identity = {"pid": bystander.pid, "create_time": 1.0}
        _ledger_with(tmp_path, {"kind": "process", "what": "old", **identity})
        report = sweep(tmp_path)
        assert bystander.poll() is None, f"a bystander was killed: {report}"
    finally:
        bystander.kill()
        bystander.wait()


def test_the_recorded_process_is_recognised_after_it_retitles_itself():
    """bhyve's setproctitle() replaces its whole command line with "bhyve: NAME"; a
    process with that one-word command line stands in for it."""
    retitled = subprocess.Popen(["bhyve: vm1"], executable="/bin/cat", stdin=subprocess.PIPE,
                                start_new_session=True)
    try:
        launched = ["bhyve", "-c", "1", "vm1"]
        assert ProcessIdentity.capture(retitled.pid, launched, title="bhyve: vm1").is_running()
        assert not ProcessIdentity.capture(retitled.pid, launched).is_running()
    finally:
        retitled.kill()
        retitled.wait()


def test_a_zombie_is_not_the_recorded_process():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = ProcessIdentity.capture(child.pid, [sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.02)  # it exits at once; not reaped, it stays a zombie
        assert identity.mismatch() == "it is a zombie (ended, not reaped)"
    finally:
        child.wait()


def test_an_older_versions_run_is_left_while_its_owner_pid_exists(tmp_path):
    """Run directories without an owner lock come from a version without locks: never
    judged dead while a process has their owner's pid."""
    run_dir = tmp_path / "runs" / "legacy"
    run_dir.mkdir(parents=True)
    kept = tmp_path / "kept"
    kept.mkdir()
    entries = [{"kind": "owner", "pid": os.getpid(), "create_time": 1.0},
               {"id": 1, "kind": "path", "path": str(kept)}]
    (run_dir / LEDGER_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert sweep(tmp_path) == []
    assert kept.exists() and not (run_dir / OWNER_LOCK).exists()


def test_torn_last_line_is_ignored(tmp_path):
    ledger = Ledger.open_new(tmp_path)
    path_entry = tmp_path / "p"
    ledger.record_path(path_entry)
    with ledger.path.open("a") as f:
        f.write('{"id": 9, "kind": "pa')  # kill -9 in the middle of a write
    owner, entries = read_ledger(ledger.path)
    assert owner["pid"] == os.getpid()
    assert [e["path"] for e in entries] == [str(path_entry)]
    ledger.close()


def test_a_vanished_run_directory_is_a_clear_error_not_a_traceback(tmp_path):
    """Someone removed the run's directory: recording fails naming it, close reports it
    and lets the lock go."""
    ledger = Ledger.open_new(tmp_path)
    run_dir = ledger.run_dir
    ledger_module.shutil.rmtree(run_dir)

    with pytest.raises(RunDirectoryVanished, match="vanished while this run was using it"):
        ledger.record_path(tmp_path / "x")
    with pytest.raises(RunDirectoryVanished, match=str(run_dir)):
        ledger.directory("scratch")
    ledger.release(1)  # nothing to mark: no error
    with pytest.raises(RunDirectoryVanished, match="closing the run"):
        ledger.close()
    assert not run_dir.exists(), "close must not bring the directory back"
    assert ledger.close() == []


def test_killing_a_childs_group_leaves_its_exit_status_to_its_parent():
    """kill_process_group waits for the end without reaping: the harness's own hypervisor
    is reaped by its reader thread (pexpect's waitpid), and a second waitpid once took the
    status from under it ("survived SIGKILL")."""
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert kill_process_group(ProcessIdentity.capture(child.pid, ["sleep", "60"]))
        assert child.wait(timeout=10) == -signal.SIGTERM, "someone else reaped the child"
    finally:
        child.kill()
        child.wait()
