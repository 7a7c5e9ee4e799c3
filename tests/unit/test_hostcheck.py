"""Host checks: the driver's preflight and ``bhyve-snaptest doctor`` read one list."""

import sys

import pytest

from bhyve_snaptest.cli import main
from bhyve_snaptest.drivers.bhyve import BhyveDriver
from bhyve_snaptest.errors import ConfigError, ExitStatus, PrerequisiteMissing
from bhyve_snaptest.hostcheck import (
    FAIL,
    NOT_CHECKED,
    OK,
    WARN,
    HostCheck,
    evaluate,
    require,
    table,
)


def _fails(message):
    def probe():
        raise PrerequisiteMissing(message)
    return probe


def test_a_failed_gate_leaves_the_rest_not_checked_never_passed():
    results = list(evaluate([HostCheck("host", _fails("not FreeBSD"), "use FreeBSD", gate=True),
                             HostCheck("vmm", lambda: "loaded", "kldload vmm")]))
    assert [(r.name, r.status) for r in results] == [("host", FAIL), ("vmm", NOT_CHECKED)]
    assert results[1].detail == "needs: host"


def test_an_optional_check_only_warns_and_preflight_goes_on():
    checks = [HostCheck("kvm", _fails("no /dev/kvm"), "slower", required=False),
              HostCheck("qemu", lambda: "/usr/bin/qemu", "install it")]
    assert [r.status for r in evaluate(checks)] == [WARN, OK]
    require(checks)


def test_preflight_raises_the_first_failure_with_its_fix_or_its_own_error():
    with pytest.raises(PrerequisiteMissing, match="no firmware: pkg install edk2-bhyve"):
        require([HostCheck("fw", _fails("no firmware"), "pkg install edk2-bhyve")])

    def bad_option():
        raise ConfigError("--checkpoint-dir needs bhyve -t")
    with pytest.raises(ConfigError, match="needs bhyve -t"):
        require([HostCheck("-t", bad_option, "apply D34547")])


def test_the_table_shows_the_fix_under_each_failing_row():
    text = table(evaluate([HostCheck("root", _fails("uid 1001"), "run as root"),
                           HostCheck("vmm", lambda: "loaded", "kldload vmm")]))
    lines = text.splitlines()
    assert lines[2].split() == ["root", "FAIL", "uid", "1001"]
    assert lines[3].strip() == "fix: run as root"
    assert lines[4].split() == ["vmm", "ok", "loaded"]


def test_doctor_for_bhyve_on_linux_checks_the_emulation_and_says_so(capsys, tmp_path):
    status = main(["doctor", "--hypervisor", "bhyve", "--image", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert status == ExitStatus.PREREQUISITE
    assert "bhyve (emulated over QEMU, personality main): proves the driver, not bhyve" in out
    assert "vmm.ko" not in out, "a FreeBSD kernel check on a Linux host"
    assert "block a run: guest image" in out


def test_doctor_for_qemu_passes_with_what_it_needs(capsys, tmp_path):
    firmware = tmp_path / "code.fd"
    firmware.write_bytes(b"")
    status = main(["doctor", "--hypervisor", "qemu", "--qemu-binary", sys.executable,
                   "--firmware-code", str(firmware), "--firmware-vars", str(firmware),
                   "--image", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert status == ExitStatus.PREREQUISITE, "the image is not built"
    assert f"QEMU found               ok           {sys.executable}" in out
    assert "UEFI firmware code       ok" in out
    assert "block a run: guest image" in out


@pytest.mark.parametrize(("personality", "minus_t"), [("main", WARN), ("d34547", OK)])
def test_bhyve_checks_on_a_freebsd_host_with_the_stand_ins(freebsd_host, personality,
                                                          minus_t):
    """(Stand-ins of bhyve and bhyvectl, with upstream personalities; not FreeBSD.)"""
    driver = BhyveDriver(freebsd_host(personality))
    results = {r.name: r.status for r in evaluate(driver.host_checks())}
    assert results.pop("bhyve -t (review D34547)") == minus_t
    assert set(results.values()) == {OK}, results
    driver.preflight()


def test_a_kernel_without_bhyve_snapshot_is_named_with_its_fix(freebsd_host, monkeypatch):
    monkeypatch.setenv("STANDIN_CONFTXT", "options\tSCHED_ULE\n")
    driver = BhyveDriver(freebsd_host("main"))
    results = {r.name: r for r in evaluate(driver.host_checks())}
    assert results["kernel BHYVE_SNAPSHOT"].status == FAIL
    assert results["bridge and tap"].status in (OK, FAIL)
    with pytest.raises(PrerequisiteMissing, match="built without options BHYVE_SNAPSHOT"):
        driver.preflight()


def test_checkpoint_dir_without_minus_t_is_a_bad_option_not_a_missing_prerequisite(
        tmp_path, freebsd_host):
    driver = BhyveDriver(freebsd_host("main", checkpoint_dir=tmp_path / "ckp"))
    with pytest.raises(ConfigError, match="--checkpoint-dir needs bhyve -t"):
        driver.preflight()


def test_plan_warns_about_binaries_that_do_not_exist(capsys, tmp_path):
    assert main(["plan", "--hypervisor", "bhyve", "--bhyve", "/no/such/bhyve",
                 "--bhyvectl", sys.executable, "--image", str(tmp_path / "none")]) == 0
    err = capsys.readouterr().err
    assert "warning: /no/such/bhyve does not exist on this host" in err
    assert sys.executable not in err
