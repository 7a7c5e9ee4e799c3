"""The ledger lets a later run remove what a killed run left behind, and nothing else."""

import json
import os
import subprocess
import sys
import time

import psutil

from fixtures.ledger import Ledger, read_ledger, same_process_alive, sweep


def _dead_run(tmp_path, child_pid: int, scratch) -> None:
    """Write the ledger of a run whose owner is dead, as after kill -9."""
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()
    run_dir = tmp_path / "runs" / "dead-run"
    run_dir.mkdir(parents=True)
    entries = [
        {"kind": "owner", "pid": owner.pid, "create_time": 1.0},
        {"id": 1, "kind": "path", "path": str(scratch)},
        {"id": 2, "kind": "process", "pid": child_pid,
         "create_time": psutil.Process(child_pid).create_time(), "what": "stand-in"},
    ]
    (run_dir / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_sweep_kills_process_group_and_removes_files_of_dead_run(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "disk.img").write_bytes(b"x")
    # A session leader with a child, like a hypervisor and its migration helper.
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    helpers = []
    while not helpers:
        helpers = psutil.Process(leader.pid).children()
    _dead_run(tmp_path, leader.pid, scratch)

    report = sweep(tmp_path)

    leader.wait(timeout=10)
    _, alive = psutil.wait_procs(helpers, timeout=5)
    assert alive == [], "the helper in the group survived"
    assert not scratch.exists()
    assert not (tmp_path / "runs" / "dead-run").exists()
    assert any("killed process group" in line for line in report)


def test_sweep_leaves_runs_of_living_owners_alone(tmp_path):
    ledger = Ledger.open_new(tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    ledger.record_path(kept)

    assert sweep(tmp_path) == []
    assert kept.exists()
    ledger.close()
    assert not kept.exists()


def test_released_entries_are_not_removed(tmp_path):
    ledger = Ledger.open_new(tmp_path)
    released = tmp_path / "released"
    released.mkdir()
    ledger.release(ledger.record_path(released))

    _, entries = read_ledger(ledger.path)

    assert entries == []
    ledger.close()
    assert released.exists()


def test_recycled_pid_is_not_killed(tmp_path):
    """A ledger entry whose start time does not match the live pid names another process."""
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        run_dir = tmp_path / "runs" / "old"
        run_dir.mkdir(parents=True)
        entries = [{"kind": "owner", "pid": 999999999, "create_time": 1.0},
                   {"id": 1, "kind": "process", "pid": bystander.pid, "create_time": 1.0}]
        (run_dir / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
        sweep(tmp_path)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


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


def test_a_zombie_owner_counts_as_dead():
    """After kill -9 an unreaped owner lingers as a zombie; its leftovers must still go."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(child.pid)
    create_time = process.create_time()
    for _ in range(100):  # it exits at once; not reaped, it stays a zombie
        if process.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    assert not same_process_alive(child.pid, create_time)
    child.wait()
