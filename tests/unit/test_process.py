"""The hypervisor process protocol: console capture, pattern waits, group kill, ledger."""

import re
import subprocess
import sys

import psutil
import pytest

from bhyve_snaptest.health import DMESG_ERROR_PATTERN
from bhyve_snaptest.ledger import Ledger, read_ledger
from bhyve_snaptest.process import KERNEL_ERROR_PATTERNS, REBOOT_PATTERNS, HypervisorProcess


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger.open_new(tmp_path / "state")
    yield ledger
    ledger.close()


def _spawn(tmp_path, ledger, script: str) -> HypervisorProcess:
    return HypervisorProcess([sys.executable, "-c", script], console_log=tmp_path / "console.log",
                             stderr_log=tmp_path / "stderr.log", ledger=ledger, what="stand-in")


def test_console_and_stderr_are_captured_separately(tmp_path, ledger):
    proc = _spawn(tmp_path, ledger,
                  "import sys; print('SNAPTEST-READY ip=1'); print('oops', file=sys.stderr)")
    assert proc.wait_for_console(r"SNAPTEST-READY ip=\d", timeout=20) is not None
    status = proc.wait_exit(20)
    assert status is not None and status.exitcode == 0
    assert "SNAPTEST-READY" in (tmp_path / "console.log").read_text()
    assert "oops" in (tmp_path / "stderr.log").read_text()
    assert "oops" not in proc.console_text()


def test_wait_for_console_times_out_without_the_pattern(tmp_path, ledger):
    proc = _spawn(tmp_path, ledger, "import time; print('booting'); time.sleep(60)")
    assert proc.wait_for_console("never-printed", timeout=0.5) is None
    proc.kill()


def test_kill_ends_the_whole_group_and_releases_the_ledger_entry(tmp_path, ledger):
    proc = _spawn(tmp_path, ledger,
                  "import subprocess, time; subprocess.Popen(['sleep', '300']); "
                  "print('child started', flush=True); time.sleep(300)")
    assert proc.wait_for_console("child started", timeout=20)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children

    proc.kill()

    assert not proc.alive
    _, gone = psutil.wait_procs(children, timeout=5)
    assert not gone, f"helpers survived: {gone}"
    _, entries = read_ledger(ledger.path)
    assert all(e["kind"] != "process" for e in entries)


def test_exit_code_and_kernel_errors_are_reported(tmp_path, ledger):
    proc = _spawn(tmp_path, ledger,
                  "print('[ 1.0] BUG: kernel NULL pointer dereference'); raise SystemExit(3)")
    status = proc.wait_exit(20)
    assert status is not None and status.exitcode == 3
    assert str(status) == "exit status 3"
    assert proc.kernel_errors() == ["[ 1.0] BUG: kernel NULL pointer dereference"]


FREEBSD_TROUBLE = [
    "panic: vm_fault_lookup: fault on nofault entry, addr: 0xfffffe00deadb000",
    "Fatal trap 12: page fault while in kernel mode",
    "ahcich0: Timeout on slot 7 port 0",
    "(ada0:ahcich0:0:0:0): CAM status: Command timeout",
    "vtnet0: watchdog timeout on queue 0",
    "g_vfs_done():ada0p2[WRITE(offset=65536, length=4096)]error = 5",
    "/: bad dir ino 2 at offset 0: mangled entry",
]


@pytest.mark.parametrize("line", FREEBSD_TROUBLE)
def test_freebsd_kernel_trouble_is_recognised_on_the_console_and_in_dmesg(line):
    """The same patterns serve the console (Python) and the guest's dmesg (grep -E)."""
    assert re.search("|".join(KERNEL_ERROR_PATTERNS), line)
    grep = subprocess.run(["grep", "-E", DMESG_ERROR_PATTERN], input=line + "\n", text=True,
                          capture_output=True, check=False)
    assert grep.returncode == 0, grep.stderr


def test_an_ordinary_boot_is_not_trouble():
    ordinary = "ahcich0: AHCI v1.30 with 6 6Gbps ports\nvtnet0: link state changed to UP\n"
    assert not re.search("|".join(KERNEL_ERROR_PATTERNS), ordinary)


@pytest.mark.parametrize("line", ["Rebooting...", "[   12.5] reboot: Restarting system"])
def test_a_guest_reboot_on_the_console_is_recognised(line):
    assert re.search("|".join(REBOOT_PATTERNS), line)
    assert not re.search("|".join(REBOOT_PATTERNS), "Booting from Hard Disk...")
