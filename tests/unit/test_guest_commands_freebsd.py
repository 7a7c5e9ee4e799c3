"""Every command the harness sends into a guest, run under FreeBSD-like tools.

The call sites are found, not listed: the first test reads the harness's source for every
``guest.run``/``check_output``/``put_file`` call and fails if one of them was not run by
the tests below, so a new guest command cannot land without being run here. The others
drive each harness step that talks to a guest (first-boot check, clock, health, the
workloads from install to collect) through :class:`FreeBSDShell`: no /proc, no setsid,
FreeBSD's wc padding, sysctl, mount and ping output, ping refusing a sub-second interval
to a non-root user. A Linux-ism in any of them fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from bhyve_snaptest.copysource import CopySource, write_source
from bhyve_snaptest.firstboot import settle_first_boot
from bhyve_snaptest.guest_files import (
    NOT_APPLICABLE,
    fill_with_random,
    seen_after_cache_drop,
    write_synced,
)
from bhyve_snaptest.health import guest_problems, kernel_problems
from bhyve_snaptest.images.firstboot_script import STATUS_FILE
from bhyve_snaptest.provenance import describe_guest
from bhyve_snaptest.scenario import GuestClock
from bhyve_snaptest.workloads import CopyWorkload, PingWorkload, WorkloadRun
from bhyve_snaptest.workloads.memory import MemoryWorkload
from tests.unit.freebsd_userland import FreeBSDShell

PROJECT = Path(__file__).resolve().parents[2]
GUEST_METHODS = {"run", "check_output", "put_file"}
#: Call sites in the scenarios that send their own commands, and why they are not run here.
NOT_RUN_HERE = {
    ("tests/scenarios/test_ssh_drops.py", "test_a_read_survives_a_dropped_connection"):
        "kills its own SSH session ($PPID): only a guest's sshd shows what that does",
    ("tests/scenarios/test_ssh_drops.py", "test_a_command_that_may_have_run_is_not_repeated"):
        "kills its own SSH session ($PPID): only a guest's sshd shows what that does",
    ("tests/scenarios/test_ssh_drops.py",
     "test_ssh_gives_up_after_bounded_reconnects_with_the_console_tail"):
        "kills its own SSH session ($PPID): only a guest's sshd shows what that does",
}
#: Every call site run by a test in this module, shared across them.
RUN_SITES: set[tuple[str, str]] = set()


def guest_call_sites() -> set[tuple[str, str]]:
    """(file, function) of each call on a guest shell in the harness and its scenarios.

    A guest shell is an expression ending in ``guest`` (``guest``, ``vm.guest``,
    ``restored.guest``); fixtures/bhyve_snaptest/guest.py is the shell itself.
    """
    sites = set()
    for path in sorted([*(PROJECT / "fixtures" / "bhyve_snaptest").rglob("*.py"),
                        *(PROJECT / "tests/scenarios").rglob("*.py")]):
        if path.name == "guest.py" and path.parent.name == "bhyve_snaptest":
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in GUEST_METHODS
                        and ast.unparse(node.func.value).split(".")[-1] == "guest"):
                    sites.add((str(path.relative_to(PROJECT)), function.name))
    return sites


@pytest.fixture
def freebsd(tmp_path):
    memory_dir = tmp_path / "mem"
    memory_dir.mkdir()
    shell = FreeBSDShell(tmp_path, {"FREEBSD_TMPFS": str(memory_dir)})
    yield shell, memory_dir
    RUN_SITES.update((path, function) for path, function, _ in shell.sent)


def _vm(shell: FreeBSDShell, guest_dir: Path) -> SimpleNamespace:
    image = SimpleNamespace(guest_dir=str(guest_dir))
    return SimpleNamespace(guest=shell, spec=SimpleNamespace(image=image),
                           reboots=list, kernel_errors=list)


def test_the_first_boot_checks_pass_on_a_guest_that_was_set_up(freebsd):
    shell, memory_dir = freebsd
    (shell.root / "etc/ssh").mkdir(parents=True)
    (shell.root / "etc/ssh/sshd_config").write_text(
        "PasswordAuthentication no\nPasswordAuthentication yes\n")
    status = shell.root / STATUS_FILE.lstrip("/")
    status.parent.mkdir(parents=True)
    status.write_text("stage=late\nfailed=")
    result = settle_first_boot(shell, str(memory_dir), timeout=5)
    assert result.problems == []
    assert result.facts == {"stage": "late", "swap_devices": 0}


def test_the_first_boot_checks_name_what_a_freebsd_guest_left_undone(freebsd):
    shell, _ = freebsd
    (shell.root / "etc/ssh").mkdir(parents=True)
    (shell.root / "etc/ssh/sshd_config").write_text("PasswordAuthentication yes\n")
    (shell.root / "firstboot-reboot").touch()
    shell.env["FREEBSD_SWAP"] = "/dev/gpt/swapfs"
    result = settle_first_boot(shell, "/var/not-mounted", timeout=5)
    assert len(result.problems) == 4, result.problems
    assert result.facts == {"swap_devices": 1}


def test_the_clock_is_read_without_proc(freebsd):
    shell, _ = freebsd
    clock = GuestClock.read(_vm(shell, shell.root))
    assert clock.guest_uptime is not None and 119 <= clock.guest_uptime <= 122


def test_health_checks_pass_on_a_healthy_guest_and_see_a_freebsd_panic(freebsd, tmp_path):
    shell, _ = freebsd
    vm = _vm(shell, tmp_path)
    assert guest_problems(vm) == []
    dmesg = tmp_path / "dmesg.txt"
    dmesg.write_text("Fatal trap 12: page fault while in kernel mode\n")
    shell.env["FREEBSD_DMESG"] = str(dmesg)
    assert kernel_problems(vm) == ["dmesg: Fatal trap 12: page fault while in kernel mode"]


def test_the_workloads_run_from_install_to_collect(freebsd, tmp_path):
    shell, memory_dir = freebsd
    guest_dir = tmp_path / "snaptest"
    workloads = [PingWorkload("192.0.2.1", 3, 1, 1, privileged=False),
                 MemoryWorkload(1, 7, 1, 30, str(memory_dir))]
    run = WorkloadRun(workloads, str(guest_dir))
    run.install(shell)
    for workload in workloads:
        run.start(shell, workload)
    run.wait_running(shell, 60)
    before = run.states(shell)
    run.announce(shell, "restore")
    run.wait_progress(shell, before, 60)
    states = run.wait_verdicts(shell, 90)
    assert {name: state.verdict for name, state in states.items()} == \
        {"ping": "PASS", "memory": "PASS"}, states
    run.collect(shell, tmp_path / "collected")
    assert (tmp_path / "collected/ping/replies").read_text().count("icmp_seq=") == 3


def test_the_copy_workload_passes(freebsd, tmp_path):
    shell, _ = freebsd
    copy = CopyWorkload(1024 * 1024, 0.5)
    run = WorkloadRun([copy], str(tmp_path / "snaptest"))
    run.install(shell)
    run.start(shell, copy)
    assert run.wait_verdicts(shell, 60)["copy"].verdict == "PASS"
    state = tmp_path / "snaptest" / "copy"
    (state / "no-newline").write_text("last line")
    (state / "empty").write_text("")
    run.collect(shell, tmp_path / "collected")
    kept = {p.name: p.read_bytes() for p in (tmp_path / "collected/copy").iterdir()}
    assert kept == {p.name: p.read_bytes() for p in state.iterdir()
                    if p.name not in ("src", "dst")}, "collect must keep every file as is"
    assert kept["verdict"] == b"PASS\n" and kept["no-newline"] == b"last line"


def test_a_copy_of_a_source_the_host_made_passes(freebsd, tmp_path):
    shell, _ = freebsd
    source = tmp_path / "copy-source"
    sha256 = write_source(source, 1024 * 1024, bytes(16))
    copy = CopyWorkload(1024 * 1024, 0.5, CopySource(str(source), 1024 * 1024, sha256, "00"))
    run = WorkloadRun([copy], str(tmp_path / "snaptest"))
    run.install(shell)
    run.start(shell, copy)
    assert run.wait_verdicts(shell, 60)["copy"].verdict == "PASS"


def test_a_sub_second_ping_fails_its_workload_as_freebsd_would(freebsd, tmp_path):
    """Why PingWorkload refuses it up front for an unprivileged guest user."""
    shell, _ = freebsd
    ping = PingWorkload("192.0.2.1", 3, 0.5, 0)
    run = WorkloadRun([ping], str(tmp_path / "snaptest"))
    run.install(shell)
    run.start(shell, ping)
    verdict = run.wait_verdicts(shell, 30)["ping"].verdict
    assert verdict.startswith("FAIL: ping exited with status 77"), verdict


def test_the_guest_is_described_by_its_uname(freebsd):
    shell, _ = freebsd
    assert describe_guest(shell)["uname"].startswith("FreeBSD guest 14.3-RELEASE")


def test_scenario_files_are_written_and_a_cache_drop_is_not_applicable(freebsd, tmp_path):
    shell, _ = freebsd
    marker = tmp_path / "marker"
    write_synced(shell, str(marker))
    assert marker.exists()
    assert seen_after_cache_drop(shell, str(marker)) == NOT_APPLICABLE, "FreeBSD has no /proc"
    fill_with_random(shell, str(tmp_path / "ballast"), 2, timeout=30)
    assert (tmp_path / "ballast").stat().st_size == 2 * 1024 * 1024


def test_every_guest_call_site_was_run_under_freebsd_tools():
    """Runs last in this module (pytest keeps file order): the sites the tests above ran."""
    assert set(NOT_RUN_HERE) <= guest_call_sites(), "an exemption names no call site"
    missing = guest_call_sites() - RUN_SITES - set(NOT_RUN_HERE)
    assert RUN_SITES, "run this module whole: the sites are collected by the tests above"
    assert not missing, f"guest commands never run under FreeBSD-like tools: {sorted(missing)}"
