"""The guest workload scripts judge themselves: run them on the host with stand-in tools.

They are plain POSIX sh (busybox in the Linux guest, /bin/sh in FreeBSD), so the host's sh
runs them unchanged; ``SNAPTEST_DIR`` points them at a temporary directory.
"""

import os
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

import pytest

from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.workloads import CopyWorkload, PingWorkload, WorkloadState, parse_states
from tests.unit.freebsd_userland import STANDINS

#: A stand-in for ping with busybox's output format; behaviour chosen by FAKE_PING_EXIT.
FAKE_PING = """#!/bin/sh
# usage: ping -c COUNT -i INTERVAL TARGET
count=$2; interval=$4; target=$5; i=0
while [ "$i" -lt "$count" ]; do
    echo "64 bytes from $target: seq=$i ttl=64 time=0.1 ms"
    i=$((i + 1)); sleep "$interval"
done
if [ -n "${FAKE_PING_TORN:-}" ]; then
    # The moment ping.sh's own "echo $? > ping.rc" has created the file, not yet written it.
    : > "$SNAPTEST_DIR/ping/ping.rc"; sleep 1
fi
exit "${FAKE_PING_EXIT:-0}"
"""

@pytest.fixture
def guest_dir(tmp_path):
    for name in ("lib.sh", "copy.sh", "ping.sh"):
        data = resources.files("bhyve_snaptest.workloads").joinpath(name).read_bytes()
        (tmp_path / name).write_bytes(data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ping").write_text(FAKE_PING)
    (bin_dir / "ping").chmod(0o755)
    return tmp_path


def _environment(guest_dir: Path, env: dict | None = None) -> dict:
    return {**os.environ, "SNAPTEST_DIR": str(guest_dir),
            "PATH": f"{guest_dir / 'bin'}:{os.environ['PATH']}", **(env or {})}


def _run(guest_dir: Path, script: str, *args: str, env: dict | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(guest_dir / script), *args],
                          env=_environment(guest_dir, env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _start_ping(guest_dir: Path, *args: str) -> subprocess.Popen:
    """Start ping.sh in the background and return once its first reply is recorded."""
    proc = subprocess.Popen(["sh", str(guest_dir / "ping.sh"), *args],
                            env=_environment(guest_dir))
    deadline = time.monotonic() + 20
    while not (guest_dir / "ping" / "replies").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def _verdict(guest_dir: Path, name: str) -> str:
    return (guest_dir / name / "verdict").read_text().strip()


def test_copy_passes_when_the_copy_matches(guest_dir):
    result = _run(guest_dir, "copy.sh", "2")
    assert result.returncode == 0, result.stderr
    assert _verdict(guest_dir, "copy") == "PASS"
    assert (guest_dir / "copy" / "dst").stat().st_size == 2 * 1024 * 1024


def test_copy_fails_when_the_copy_is_corrupted(guest_dir):
    (guest_dir / "bin" / "cp").write_text(
        '#!/bin/sh\n/bin/cp "$1" "$2" && printf X | dd of="$2" bs=1 seek=7 conv=notrunc '
        "2>/dev/null\n")
    (guest_dir / "bin" / "cp").chmod(0o755)
    result = _run(guest_dir, "copy.sh", "1")
    assert result.returncode == 1
    assert _verdict(guest_dir, "copy").startswith("FAIL: sha256 of the copy")


def test_copy_fails_when_cp_fails(guest_dir):
    (guest_dir / "bin" / "cp").write_text("#!/bin/sh\nexit 1\n")
    (guest_dir / "bin" / "cp").chmod(0o755)
    _run(guest_dir, "copy.sh", "1")
    assert _verdict(guest_dir, "copy") == "FAIL: cp exited with status 1"


def test_a_killed_workload_still_leaves_a_failing_verdict(guest_dir):
    proc = _start_ping(guest_dir, "127.0.0.1", "100", "0.1", "0")
    proc.terminate()
    proc.wait(timeout=20)
    assert _verdict(guest_dir, "ping") == "FAIL: terminated by a signal"


def test_ping_passes_with_replies_after_the_announced_restore(guest_dir):
    proc = _start_ping(guest_dir, "10.0.2.2", "12", "0.2", "1")
    (guest_dir / "restores").write_text("1\n")
    assert proc.wait(timeout=30) == 0
    assert _verdict(guest_dir, "ping") == "PASS"
    assert len((guest_dir / "ping" / "replies").read_text().splitlines()) == 12


def test_ping_fails_when_no_restore_was_announced(guest_dir):
    _run(guest_dir, "ping.sh", "10.0.2.2", "3", "0.1", "1")
    assert _verdict(guest_dir, "ping") == \
        "FAIL: ping ended after 0 of 1 restores; make COUNT x INTERVAL longer"


def test_ping_fails_when_ping_fails(guest_dir):
    _run(guest_dir, "ping.sh", "10.0.2.2", "2", "0.1", "0", env={"FAKE_PING_EXIT": "1"})
    assert _verdict(guest_dir, "ping").startswith("FAIL: ping exited with status 1 after 2 of 2")


def test_states_parse_per_workload_blocks():
    output = ("@@ copy\nphase=copying\nverdict=\ncopied_bytes=1048576\ntotal_bytes=4194304\n"
              "@@ ping\nphase=done\nverdict=FAIL: no reply\nreplies=3\nlast_seq=2\n")
    states = parse_states(output)
    assert states["copy"] == WorkloadState("copy", "copying", None,
                                           {"copied_bytes": "1048576", "total_bytes": "4194304"})
    assert CopyWorkload.progress(states["copy"]) == 0.25
    assert states["ping"].verdict == "FAIL: no reply"
    assert not states["ping"].passed


def test_ping_arguments_keep_fractional_interval():
    assert PingWorkload("10.0.2.2", 60, 0.5, 1).arguments() == ["10.0.2.2", "60", "0.5", "1"]


def test_copy_size_must_be_whole_mib():
    with pytest.raises(Exception, match="whole MiB"):
        CopyWorkload(1000)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_scripts_parse_with_busybox_sh(guest_dir):
    for name in ("lib.sh", "copy.sh", "ping.sh"):
        subprocess.run(["busybox", "sh", "-n", str(guest_dir / name)], check=True)


@pytest.mark.parametrize("path_dirs", ["with-setsid", "without-setsid"])
def test_start_command_detaches_with_or_without_setsid(tmp_path, guest_dir, path_dirs):
    """FreeBSD has no setsid(1): the start command falls back to nohup and still runs."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("sh", "mkdir", "rm", "nohup", "cat", "mv", "sleep", "grep", "sed", "tail",
                 "wc", "date") + (("setsid",) if path_dirs == "with-setsid" else ()):
        (tools / tool).symlink_to(shutil.which(tool))
    (tools / "ping").symlink_to(guest_dir / "bin" / "ping")
    ping = PingWorkload("10.0.2.2", 2, 0.1, 0)
    ping.root = str(guest_dir)
    subprocess.run(["sh", "-c", ping.start_command()], env={"PATH": str(tools)}, check=True,
                   timeout=30)
    deadline = time.monotonic() + 20
    while not (guest_dir / "ping" / "verdict").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _verdict(guest_dir, "ping") == "PASS"


def test_ping_reads_its_exit_status_only_once_written(guest_dir):
    """ping.rc exists, empty, between its creation and its write: reading it then must not
    fail the workload ("[ '' -eq 0 ]"); the status is written to a temporary name and
    renamed, and read once it is a number."""
    result = _run(guest_dir, "ping.sh", "10.0.2.2", "2", "0.1", "0",
                  env={"FAKE_PING_TORN": "1"})
    assert _verdict(guest_dir, "ping") == "PASS", (result.stderr,
                                                  _verdict(guest_dir, "ping"))


def test_counts_are_printed_without_freebsds_padding(guest_dir):
    """FreeBSD's wc pads counts with spaces: messages print the bare number."""
    (guest_dir / "bin" / "wc").write_text(STANDINS["wc"])
    (guest_dir / "bin" / "wc").chmod(0o755)
    _run(guest_dir, "ping.sh", "10.0.2.2", "2", "0.1", "1")
    assert _verdict(guest_dir, "ping") == \
        "FAIL: ping ended after 0 of 1 restores; make COUNT x INTERVAL longer"


def test_a_sub_second_ping_is_refused_for_a_guest_whose_ping_is_not_root():
    """FreeBSD's ping refuses -i below 1 s without root (sbin/ping/ping.c)."""
    assert PingWorkload("10.0.2.2", 10, 0.5, expected_restores=1).interval_s == 0.5
    PingWorkload("10.0.2.2", 10, 1, expected_restores=1, privileged=False)
    with pytest.raises(ConfigError, match=r"--ping-interval 0\.5.*only root"):
        PingWorkload("10.0.2.2", 10, 0.5, expected_restores=1, privileged=False)
