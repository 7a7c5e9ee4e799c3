"""The memory workload judges itself: run memory.sh on the host with sh, as the guest would.

The pattern lives in ``tmp_path/mem`` (on whatever file system the host has, hence the
``any`` file system check) and the state in ``SNAPTEST_DIR=tmp_path``. The file system
check itself runs against stand-in ``df`` and ``mount`` printing Linux and FreeBSD output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.workloads import parse_states
from bhyve_snaptest.workloads.memory import PAGE, MemoryWorkload, pattern_sha256

SEED = "7"


@pytest.fixture
def guest_dir(tmp_path: Path) -> Path:
    for name in ("lib.sh", "memory.sh"):
        data = resources.files("bhyve_snaptest.workloads").joinpath(name).read_bytes()
        (tmp_path / name).write_bytes(data)
    (tmp_path / "mem").mkdir()
    (tmp_path / "bin").mkdir()
    return tmp_path


def _environment(guest_dir: Path, path: str | None = None) -> dict[str, str]:
    return {**os.environ, "SNAPTEST_DIR": str(guest_dir),
            "PATH": path or f"{guest_dir / 'bin'}:{os.environ['PATH']}"}


def _args(guest_dir: Path, size_mib: int, seed: str, restores: int, duration_s: int, *,
          check: str = "any") -> list[str]:
    return [str(size_mib), seed, str(restores), str(duration_s), str(guest_dir / "mem"), check]


def _run(guest_dir: Path, *args: str, shell: tuple[str, ...] = ("sh",),
         path: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*shell, str(guest_dir / "memory.sh"), *args],
                          env=_environment(guest_dir, path), capture_output=True, text=True,
                          timeout=60, check=False)


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _state(guest_dir: Path, name: str) -> str:
    path = guest_dir / "memory" / name
    return path.read_text().strip() if path.exists() else ""


def _start_verifying(guest_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start memory.sh in the background; return once its first pass matched."""
    proc = subprocess.Popen(["sh", str(guest_dir / "memory.sh"), *args],
                            env=_environment(guest_dir))
    _wait_for(lambda: _state(guest_dir, "passes") not in ("", "0"))
    return proc


def _verdict(guest_dir: Path) -> str:
    return _state(guest_dir, "verdict")


def test_passes_after_a_pass_that_follows_the_announced_restore(guest_dir):
    proc = _start_verifying(guest_dir, *_args(guest_dir, 1, SEED, 1, 60))
    (guest_dir / "restores").write_text("1700000000\n")
    assert proc.wait(timeout=30) == 0
    assert _verdict(guest_dir) == "PASS"
    assert _state(guest_dir, "restores_seen") == "1"
    restore, passes_before = _state(guest_dir, "restore_passes").split()
    assert restore == "1"
    assert int(_state(guest_dir, "passes")) > int(passes_before)
    assert not (guest_dir / "mem" / "snaptest-memory").exists()  # RAM given back


def _flip_byte(pattern: Path, offset: int) -> None:
    with pattern.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x20]))


def _swap_pages(pattern: Path, first: int, second: int) -> None:
    with pattern.open("r+b") as f:
        f.seek(first * PAGE)
        a = f.read(PAGE)
        f.seek(second * PAGE)
        b = f.read(PAGE)
        f.seek(first * PAGE)
        f.write(b)
        f.seek(second * PAGE)
        f.write(a)


@pytest.mark.parametrize(("corrupt", "where"), [
    (lambda p: _flip_byte(p, 3 * PAGE + 99),
     "first difference at byte 12388 in page 3, which now begins 'page 00000003 seed 0000000007'"),
    (lambda p: _swap_pages(p, 1, 2),
     "in page 1, which now begins 'page 00000002 seed 0000000007'"),
], ids=["flipped-byte", "swapped-pages"])
def test_fails_naming_the_mismatch_when_the_pattern_changes(guest_dir, corrupt, where):
    proc = _start_verifying(guest_dir, *_args(guest_dir, 1, SEED, 1, 60))
    corrupt(guest_dir / "mem" / "snaptest-memory")
    assert proc.wait(timeout=30) == 1
    verdict = _verdict(guest_dir)
    expected = _state(guest_dir, "pattern.sha256")
    actual = _state(guest_dir, "mismatch.sha256")
    assert re.match(rf"FAIL: pass \d+ \(after 0 of 1 restores\): sha256 {actual} differs from "
                    rf"the pattern's {expected}; ", verdict), verdict
    assert actual != expected
    assert where in verdict


def test_fails_when_no_restore_is_announced_in_time(guest_dir):
    result = _run(guest_dir, *_args(guest_dir, 1, SEED, 1, 2))
    assert result.returncode == 1
    assert re.fullmatch(r"FAIL: only 0 of 1 restores announced within 2 s \(\d+ passes, all "
                        r"matched\)", _verdict(guest_dir))


def test_a_killed_workload_fails_and_gives_the_memory_back(guest_dir):
    proc = _start_verifying(guest_dir, *_args(guest_dir, 1, SEED, 1, 60))
    proc.terminate()
    proc.wait(timeout=20)
    assert _verdict(guest_dir) == "FAIL: terminated by a signal"
    assert not (guest_dir / "mem" / "snaptest-memory").exists()


def _pattern_sum(guest_dir: Path, seed: str, shell: tuple[str, ...] = ("sh",),
                 path: str | None = None) -> str:
    (guest_dir / "memory" / "verdict").unlink(missing_ok=True)
    result = _run(guest_dir, *_args(guest_dir, 1, seed, 0, 0), shell=shell, path=path)
    assert result.returncode == 0, result.stderr
    assert _verdict(guest_dir) == "PASS"
    return _state(guest_dir, "pattern.sha256")


def test_the_pattern_depends_on_the_seed_alone(guest_dir):
    first = _pattern_sum(guest_dir, SEED)
    assert _pattern_sum(guest_dir, SEED) == first
    assert _pattern_sum(guest_dir, "8") != first
    assert first == pattern_sha256(1, 7)  # the host's awk and Python's reference agree


def _fake_df_and_mount(guest_dir: Path, mount_line: str, avail_kib: int = 1048576) -> None:
    mnt = guest_dir / "mem"
    tools = {
        "df": f'echo "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
              f'echo "dev 1048576 0 {avail_kib} 0% {mnt}"\n',
        "mount": f'echo "{mount_line.format(mnt=mnt)}"\n',
    }
    for tool, body in tools.items():
        (guest_dir / "bin" / tool).write_text(f"#!/bin/sh\n{body}")
        (guest_dir / "bin" / tool).chmod(0o755)


@pytest.mark.parametrize(("mount_line", "verdict"), [
    ("tmpfs on {mnt} type tmpfs (rw,relatime)", "PASS"),
    ("tmpfs on {mnt} (tmpfs, local)", "PASS"),
    ("/dev/md0 on {mnt} (ufs, local)", "PASS"),
    ("/dev/vtbd0p2 on {mnt} (ufs, local, soft-updates)",
     "FAIL: {mnt} is on ufs, not in RAM: pass a tmpfs directory as MEMDIR"),
    ("/dev/vda on {mnt} type ext4 (rw)",
     "FAIL: {mnt} is on ext4, not in RAM: pass a tmpfs directory as MEMDIR"),
], ids=["linux-tmpfs", "freebsd-tmpfs", "freebsd-md", "freebsd-ufs", "linux-ext4"])
def test_the_pattern_must_be_in_ram(guest_dir, mount_line, verdict):
    _fake_df_and_mount(guest_dir, mount_line)
    _run(guest_dir, *_args(guest_dir, 1, SEED, 0, 0, check="ram"))
    assert _verdict(guest_dir) == verdict.format(mnt=guest_dir / "mem")


def test_fails_early_when_the_pattern_does_not_fit(guest_dir):
    _fake_df_and_mount(guest_dir, "tmpfs on {mnt} type tmpfs (rw)", avail_kib=1500)
    _run(guest_dir, *_args(guest_dir, 1, SEED, 0, 0, check="ram"))
    assert _verdict(guest_dir) == \
        f"FAIL: {guest_dir / 'mem'} has 1500 KiB free; the pattern needs 2048 KiB"


@pytest.mark.parametrize("args", [["0", SEED, "0", "1"], ["1", "x", "0", "1"],
                                  ["1", "99999999999", "0", "1"]])
def test_rejects_bad_arguments(guest_dir, args):
    _run(guest_dir, *args, str(guest_dir / "mem"), "any")
    assert _verdict(guest_dir).startswith("FAIL: ")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_script_parses_with_busybox_sh(guest_dir):
    subprocess.run(["busybox", "sh", "-n", str(guest_dir / "memory.sh")], check=True)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_runs_with_busybox_applets_only(guest_dir):
    """The Linux guest has busybox and nothing else: its awk must make the same pattern."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    applets = guest_dir / "applets"
    applets.mkdir()
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        (applets / applet).symlink_to(busybox)
    assert _pattern_sum(guest_dir, SEED, shell=(busybox, "sh"), path=str(applets)) == \
        pattern_sha256(1, 7)


def test_arguments_and_defaults():
    workload = MemoryWorkload(64, 7, 1, 600)
    assert workload.arguments() == ["64", "7", "1", "600", "/tmp", "ram"]
    workload = MemoryWorkload(8, 1, 0, 30, memory_dir="/mnt/snapmem", require_ram=False)
    assert workload.arguments() == ["8", "1", "0", "30", "/mnt/snapmem", "any"]


def test_for_guest_takes_a_share_of_the_guest_memory():
    assert MemoryWorkload.for_guest(256, 0.25, seed=1, expected_restores=1,
                                    duration_s=60).size_mib == 64
    assert MemoryWorkload.for_guest(1000, 0.3333, seed=1, expected_restores=1,
                                    duration_s=60).size_mib == 333
    assert MemoryWorkload.for_guest(256, 0.5, seed=1, expected_restores=1,
                                    duration_s=60).size_mib == 128


@pytest.mark.parametrize("share", [0.0, -0.1, 0.51, 1.0])
def test_for_guest_leaves_the_guest_at_least_half_its_memory(share):
    with pytest.raises(ConfigError, match="the guest needs RAM for itself"):
        MemoryWorkload.for_guest(256, share, seed=1, expected_restores=1, duration_s=60)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size_mib": 0}, "at least 1 MiB"),
    ({"seed": -1}, "bad memory pattern seed"),
    ({"seed": 2**31}, "bad memory pattern seed"),
    ({"expected_restores": -1}, "bad expected restores"),
    ({"duration_s": 0}, "at least 1 s"),
    ({"memory_dir": "tmp"}, "absolute path"),
])
def test_rejects_bad_settings(kwargs, message):
    settings = {"size_mib": 4, "seed": 1, "expected_restores": 1, "duration_s": 60, **kwargs}
    with pytest.raises(ConfigError, match=message):
        MemoryWorkload(**settings)


def test_for_guest_rejects_a_share_below_one_mib():
    with pytest.raises(ConfigError, match="less than 1 MiB"):
        MemoryWorkload.for_guest(64, 0.01, seed=1, expected_restores=1, duration_s=60)


def test_probe_and_conditions_read_the_progress_files(tmp_path):
    workload = MemoryWorkload(1, 7, 1, 60)
    workload.root = str(tmp_path)
    state = tmp_path / "memory"
    state.mkdir()

    def running() -> bool:
        return subprocess.run(["sh", "-c", workload.running_condition()],
                              check=False).returncode == 0

    assert not running()
    (state / "phase").write_text("verifying\n")
    (state / "passes").write_text("0\n")
    assert not running()
    (state / "passes").write_text("3\n")
    (state / "last_ok").write_text("1700000000\n")
    (state / "restores_seen").write_text("1\n")
    assert running()
    output = subprocess.run(["sh", "-c", "echo '@@ memory'; " + workload.probe()],
                            capture_output=True, text=True, check=True).stdout
    before = parse_states(output)["memory"]
    assert before.values == {"passes": "3", "last_ok": "1700000000", "restores_seen": "1"}

    def progressed() -> bool:
        return subprocess.run(["sh", "-c", workload.progressed_condition(before)],
                              check=False).returncode == 0

    assert not progressed()
    (state / "passes").write_text("4\n")
    assert progressed()


def test_start_command_clears_a_stale_pass_count(tmp_path):
    workload = MemoryWorkload(1, 7, 1, 60)
    workload.root = str(tmp_path)
    assert workload.start_command().startswith(
        f"rm -f {tmp_path}/memory/phase {tmp_path}/memory/passes ")
