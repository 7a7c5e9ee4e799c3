"""``bhyve-snaptest verify``: refuses what cannot verify a patch, and its verdict is exact."""

import re
import sys
from pathlib import Path

import pytest

from bhyve_snaptest.cli import main
from bhyve_snaptest.drivers.base import HostSettings
from bhyve_snaptest.errors import ConfigError, ExitStatus
from bhyve_snaptest.verify import CaseOutcome, check_libvmmapi, outcomes, verdict

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.scenarios.test_suspend_restore" name="test_busy"/>
<testcase classname="tests.scenarios.test_capsicum" name="test_sandboxed">
  <skipped type="pytest.xfail" message="bhyve pid 7 is not in capability mode"/></testcase>
<testcase classname="tests.scenarios.test_failed_suspends" name="test_full">
  <failure message="AssertionError: the VM must run on&#10;more">trace</failure></testcase>
</testsuite></testsuites>
"""


def test_verify_on_linux_says_at_once_that_it_needs_a_freebsd_host(capsys, tmp_path):
    status = main(["verify", "--bhyve", "/usr/obj/bhyve", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == ExitStatus.PREREQUISITE
    assert "It needs a FreeBSD host with the patched bhyve" in out
    assert re.search(r"^FreeBSD host +FAIL", out, re.MULTILINE)
    assert list(tmp_path.iterdir()) == [], "nothing ran"


def test_verify_refuses_a_bhyve_without_minus_t(capsys, freebsd_host, tmp_path):
    """(The bhyve stand-in with main's personality, on a faked FreeBSD host.)"""
    settings = freebsd_host("main")
    status = main(["verify", "--bhyve", settings.bhyve_binary, "--bhyvectl",
                   settings.bhyvectl_binary, "--firmware-code", str(settings.firmware_code),
                   "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert status == ExitStatus.PREREQUISITE
    assert "bhyve -t (review D34547)  FAIL         --checkpoint-dir needs bhyve -t" in out
    assert not (tmp_path / "results").exists()


def test_a_reviewer_gets_pass_only_when_every_case_passed(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    cases = outcomes(junit)
    assert cases == [
        CaseOutcome("tests.scenarios.test_suspend_restore::test_busy", "passed"),
        CaseOutcome("tests.scenarios.test_capsicum::test_sandboxed", "skipped",
                    "bhyve pid 7 is not in capability mode"),
        CaseOutcome("tests.scenarios.test_failed_suspends::test_full", "failed",
                    "AssertionError: the VM must run on")]
    passed, text = verdict(cases, None, tmp_path)
    assert not passed
    assert text.splitlines()[0] == "bhyve-snaptest verify (review D34547): FAIL"
    assert "tests: 1 failed, 1 passed, 1 skipped" in text
    assert "  SKIPPED tests.scenarios.test_capsicum::test_sandboxed: bhyve pid 7" in text
    assert verdict(cases[:1], None, tmp_path)[0]
    assert not verdict([], None, tmp_path)[0], "nothing ran is not a pass"


def test_the_verdict_names_the_binaries_by_hash(tmp_path):
    record = {"harness": {"version": "0.1.0", "git_commit": "abc"},
              "host": {"uname": "FreeBSD h 15.0-CURRENT", "freebsd_version": "15.0",
                       "kernel_ident": "GENERIC"},
              "hypervisor": {"driver": "bhyve", "binaries": [
                  {"name": "/usr/obj/bhyve", "path": "/usr/obj/bhyve", "sha256": "ab12",
                   "version": None}], "kernel_bhyve_snapshot": "yes"},
              "options": {"expect_capsicum": "yes"}}
    _, text = verdict([CaseOutcome("t::a", "passed")], record, tmp_path)
    assert "/usr/obj/bhyve: /usr/obj/bhyve sha256 ab12" in text
    assert "options: --expect-capsicum=yes" in text


@pytest.fixture
def fake_ldd(tmp_path, monkeypatch):
    """ldd printing libvmmapi from $LD_LIBRARY_PATH when it is there, as rtld finds it."""
    bin_dir = tmp_path / "ldd-bin"
    bin_dir.mkdir()
    (bin_dir / "ldd").write_text(
        '#!/bin/sh\ndir=/lib\n'
        '[ -f "${LD_LIBRARY_PATH:-/none}/libvmmapi.so.5" ] && dir=$LD_LIBRARY_PATH\n'
        'echo "$1:"\necho "\tlibvmmapi.so.5 => $dir/libvmmapi.so.5 (0x1)"\n')
    (bin_dir / "ldd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_libvmmapi_must_be_the_one_both_binaries_load(tmp_path, fake_ldd):
    settings = HostSettings(bhyve_binary=sys.executable, bhyvectl_binary=sys.executable)
    patched = tmp_path / "obj" / "lib" / "libvmmapi"
    patched.mkdir(parents=True)
    (patched / "libvmmapi.so.5").write_bytes(b"patched")
    check_libvmmapi(settings, patched)
    with pytest.raises(ConfigError, match=r"loads libvmmapi from /lib/libvmmapi\.so\.5, "
                                          r"not from /nowhere"):
        check_libvmmapi(settings, Path("/nowhere"))
