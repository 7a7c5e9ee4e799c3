"""The bhyve driver's contracts, proven on Linux: command lines against upstream's option
strings, the seed's exact commands, and the process protocol against stand-in bhyve and
bhyvectl executables (tests/unit/standins) that follow upstream's behaviour."""

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.bhyve.getopt import (
    OPTSTRING_14,
    OPTSTRING_14_NO_SNAPSHOT,
    OPTSTRING_D34547,
    OPTSTRING_MAIN,
    OPTSTRING_MAIN_NO_SNAPSHOT,
    GetoptError,
    parse_bhyve_argv,
    parse_bhyvectl_argv,
)
from fixtures.bhyve.usage import BhyveFeatures
from fixtures.cli import main
from fixtures.config import GuestImage, VMSpec
from fixtures.drivers.base import Checkpoint, HostSettings, VMContext, VMState
from fixtures.drivers.bhyve import BhyveDriver, BhyveVM
from fixtures.errors import ConfigError, PrerequisiteMissing, RestoreError, SuspendError
from fixtures.ledger import Ledger, read_ledger
from fixtures.network import TapNetwork
from fixtures.reservations import SUBNET_POOL

STANDINS = Path(__file__).parent / "standins"
SEED_BOOT = ("bhyve -c 1 -m 256M -H -A -P -s 0:0,hostbridge -s 1:0,lpc "
             "-l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd -s 2:0,virtio-net,tap0 "
             "-s 3:0,ahci-hd,main.img -l com1,stdio freebsd_guest")


def _image(tmp_path: Path, *, config_drive: bool = False) -> GuestImage:
    return GuestImage(name="freebsd", directory=tmp_path, ssh_key=tmp_path / "id_ed25519",
                      ssh_user="freebsd", disk=tmp_path / "disk.img",
                      config_drive=config_drive, guest_dir="/home/freebsd/snaptest")


def _vm(tmp_path, settings=None, *, name="freebsd_guest", **spec_args) -> BhyveVM:
    spec = VMSpec(name=name, image=_image(tmp_path), **spec_args)
    driver = BhyveDriver(settings or HostSettings())
    return driver.new_vm(spec, VMContext(tmp_path, tmp_path, Ledger(tmp_path), print))


def _paths_aside(argv: list[str], vm: BhyveVM) -> str:
    """The command line with this VM's scratch paths and tap replaced by the seed's."""
    line = shlex.join(argv).replace(str(vm.disk), "main.img")
    return line.replace(f"{vm.network.tap},mac={vm.mac_address}", "tap0")


def test_boot_command_is_the_seed_command(tmp_path):
    vm = _vm(tmp_path)
    assert _paths_aside(vm.boot_argv(), vm) == SEED_BOOT


def test_restore_is_the_boot_command_with_r(tmp_path):
    vm = _vm(tmp_path)
    checkpoint = Checkpoint(tmp_path / "file.ckp", (), "bhyve", vm.spec, "suspend")
    expected = SEED_BOOT.replace("freebsd_guest", f"-r {tmp_path / 'file.ckp'} freebsd_guest")
    assert _paths_aside(vm.restore_argv(checkpoint), vm) == expected


def test_suspend_command_in_both_forms(tmp_path):
    vm = _vm(tmp_path)
    ckpt = tmp_path / "file.ckp"
    assert vm.bhyvectl_argv("suspend", ckpt) == ["bhyvectl", f"--suspend={ckpt}",
                                                 "--vm=freebsd_guest"]
    spaced = _vm(tmp_path, HostSettings(bhyvectl_space_form=True))
    assert spaced.bhyvectl_argv("suspend", ckpt) == ["bhyvectl", "--suspend", str(ckpt),
                                                     "--vm=freebsd_guest"]
    for argv in (vm.bhyvectl_argv("suspend", ckpt), spaced.bhyvectl_argv("suspend", ckpt)):
        parsed = parse_bhyvectl_argv(argv[1:])
        assert parsed["suspend"] == str(ckpt) and parsed["vm"] == "freebsd_guest"


@pytest.mark.parametrize("optstring", [OPTSTRING_MAIN, OPTSTRING_14])
@pytest.mark.parametrize(("disk", "nic"), [("ahci-hd", "virtio-net"), ("nvme", "e1000"),
                                           ("virtio-blk", "virtio-net")])
def test_every_command_line_parses_with_upstream_option_strings(tmp_path, optstring, disk,
                                                                 nic):
    vm = _vm(tmp_path, HostSettings(firmware_vars=tmp_path / "VARS.fd"), cpus=2,
             memory_mb=512, disk_model=disk, nic_model=nic)
    checkpoint = Checkpoint(tmp_path / "c.ckp", (), "bhyve", vm.spec, "suspend")
    boot = parse_bhyve_argv(vm.boot_argv()[1:], optstring)
    restore = parse_bhyve_argv(vm.restore_argv(checkpoint)[1:], optstring)
    assert boot.positional == ["freebsd_guest"]
    assert ("r", str(tmp_path / "c.ckp")) in restore.options
    assert ("s", f"3:0,{disk},{vm.disk}") in boot.options
    assert ("s", f"2:0,{nic},{vm.network.tap},mac={vm.mac_address}") in boot.options


@pytest.mark.parametrize("optstring", [OPTSTRING_MAIN_NO_SNAPSHOT, OPTSTRING_14_NO_SNAPSHOT])
def test_restore_does_not_parse_without_snapshot_support(tmp_path, optstring):
    vm = _vm(tmp_path)
    checkpoint = Checkpoint(tmp_path / "c.ckp", (), "bhyve", vm.spec, "suspend")
    parse_bhyve_argv(vm.boot_argv()[1:], optstring)
    with pytest.raises(GetoptError, match="-r"):
        parse_bhyve_argv(vm.restore_argv(checkpoint)[1:], optstring)


def test_checkpoint_dir_is_passed_as_t_and_refused_without_it(tmp_path):
    settings = HostSettings(checkpoint_dir=tmp_path / "ckp")
    vm = _vm(tmp_path, settings)
    argv = vm.boot_argv()
    assert argv[argv.index("-t") + 1] == str(tmp_path / "ckp")
    assert argv.index("-t") < argv.index("freebsd_guest")
    parse_bhyve_argv(argv[1:], OPTSTRING_D34547)
    with pytest.raises(GetoptError, match="-t"):
        parse_bhyve_argv(argv[1:], OPTSTRING_MAIN)
    assert vm.checkpoint_path(Path("elsewhere/s.ckp")) == tmp_path / "ckp" / "s.ckp"
    with pytest.raises(ConfigError, match="needs bhyve -t"):
        BhyveDriver(settings).check_settings(BhyveFeatures(snapshot=True,
                                                           checkpoint_dir_option=False))


def test_config_drive_goes_on_its_own_slot(tmp_path):
    spec = VMSpec(name="g", image=_image(tmp_path, config_drive=True))
    vm = BhyveDriver(HostSettings()).new_vm(
        spec, VMContext(tmp_path, tmp_path, Ledger(tmp_path), print))
    assert f"4:0,ahci-cd,{tmp_path / 'cidata.iso'}" in vm.boot_argv()


def test_plan_prints_the_seed_commands(capsys, tmp_path):
    assert main(["plan", "--hypervisor", "bhyve", "--image", str(tmp_path / "none")]) == 0
    boot, suspend, restore = capsys.readouterr().out.splitlines()
    assert f"-s 4:0,ahci-cd,{tmp_path}" not in boot, "the config drive is per VM, in scratch"
    assert "-s 4:0,ahci-cd," in boot
    assert boot.startswith("boot: bhyve -c 1 -m 256M -H -A -P -s 0:0,hostbridge")
    assert boot.endswith("-l com1,stdio freebsd_guest")
    assert "-s 2:0,virtio-net,tap0,mac=58:9c:fc:" in boot
    assert suspend.startswith("suspend: bhyvectl --suspend=/")
    assert suspend.endswith("--vm=freebsd_guest")
    assert " -r /" in restore and restore.endswith(" freebsd_guest")


def test_preflight_off_freebsd_names_the_host(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Linux")
    with pytest.raises(PrerequisiteMissing, match=r"FreeBSD hosts only.*--hypervisor qemu"):
        BhyveDriver(HostSettings()).preflight()


# -- the process protocol, against the stand-ins ------------------------------------------


class _NoNetwork(TapNetwork):
    """The addresses without ifconfig (the stand-ins need no interfaces)."""

    def create(self, ledger, record):
        self.created = True

    def remove(self, ledger, record):
        self.created = False


def _standin(tmp_path: Path, name: str) -> str:
    wrapper = tmp_path / name
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDINS / name}.py "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def standin_host(tmp_path, monkeypatch):
    vmm, run = tmp_path / "vmm", tmp_path / "run"
    vmm.mkdir()
    run.mkdir()
    monkeypatch.setenv("STANDIN_VMM_DIR", str(vmm))
    monkeypatch.setenv("STANDIN_RUN_DIR", str(run))
    return HostSettings(bhyve_binary=_standin(tmp_path, "bhyve"),
                        bhyvectl_binary=_standin(tmp_path, "bhyvectl"),
                        vmm_dir=vmm, bhyve_run_dir=run)


@pytest.fixture
def standin_vm(tmp_path, standin_host, fake_guest):
    ledger = Ledger.open_new(tmp_path / "state")
    results = tmp_path / "results"
    results.mkdir()
    image = GuestImage(name="freebsd", directory=tmp_path, ssh_key=fake_guest.key_file,
                       disk=tmp_path / "disk.img")
    vm = BhyveVM(VMSpec(name="standin", image=image),
                 VMContext(tmp_path, results, ledger, lambda line: None), standin_host,
                 BhyveFeatures(snapshot=True, checkpoint_dir_option=False),
                 _NoNetwork(SUBNET_POOL[0]))
    vm.disk.write_bytes(b"disk at boot")
    vm.ssh_endpoint = lambda: fake_guest  # the stand-in has no sshd
    yield vm
    vm.destroy()
    ledger.close()


def test_suspend_waits_for_exit_and_checks_the_three_files(tmp_path, standin_vm, standin_host):
    vm = standin_vm
    vm.boot(timeout=30)
    assert (standin_host.vmm_dir / "standin").exists()

    checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)

    assert vm.state is VMState.SUSPENDED
    assert vm.process.exit_status.exitcode == 0
    assert not (standin_host.vmm_dir / "standin").exists()
    assert [f.name for f in checkpoint.files] == ["s.ckp", "s.ckp.kern", "s.ckp.meta"]
    assert checkpoint.size_bytes > 256 * 1024 * 1024

    vm.restore(checkpoint, timeout=30)
    assert vm.state is VMState.RUNNING
    assert "Restoring kernel structs" in vm.process.console_text()


def test_live_checkpoint_copies_the_disk_inside_bhyves_pause(tmp_path, standin_vm):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.checkpoint(tmp_path / "live.ckp", timeout=30)
    assert standin_vm.process.alive
    assert checkpoint.files[2].exists()
    assert checkpoint.disk == tmp_path / "live.ckp.disk"
    assert standin_vm.disk.read_bytes() == b"disk at boot and on", "the guest went on"
    assert checkpoint.disk.read_bytes() == b"disk at boot", "copied after bhyve resumed"
    assert checkpoint.disk_taken == "paused"


def test_a_suspend_checkpoint_goes_with_the_vms_own_disk(tmp_path, standin_vm):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert checkpoint.disk == standin_vm.disk and checkpoint.disk_taken == "suspended"


def test_restore_into_another_memory_size_is_refused_before_bhyve_starts(
        tmp_path, standin_vm, standin_host):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    ledger = standin_vm.ledger
    bigger = BhyveVM(replace(standin_vm.spec, memory_mb=512),
                     VMContext(tmp_path / "big", tmp_path / "results", ledger,
                               lambda line: None), standin_host,
                     BhyveFeatures(snapshot=True, checkpoint_dir_option=False),
                     _NoNetwork(SUBNET_POOL[0]))
    with pytest.raises(RestoreError, match=r"cannot be restored into standin: "
                                           r"memory is 268435456 bytes, expected 536870912"):
        bigger.restore(checkpoint, timeout=30)
    assert bigger.process is None, "bhyve would have ignored -m and run the saved size"


def test_bhyve_killed_during_a_suspend_is_reported_with_the_partial_file(
        tmp_path, standin_vm, monkeypatch):
    monkeypatch.setenv("STANDIN_KILLED_DURING_SAVE", "1")
    standin_vm.boot(timeout=30)
    with pytest.raises(SuspendError) as failure:
        standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    message = str(failure.value)
    assert "signal 9" in message or "SIGKILL" in message, message
    assert f"partial files {tmp_path / 's.ckp'} (134217728 bytes)" in message
    assert standin_vm.state is VMState.DEAD


def test_restore_of_a_truncated_memory_file_is_a_clear_error(tmp_path, standin_vm):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    with checkpoint.path.open("r+b") as memory:
        memory.truncate(1024 * 1024)
    with pytest.raises(RestoreError, match="memory file's size differs") as failure:
        standin_vm.restore(checkpoint, timeout=30)
    assert "mem size mismatch" in str(failure.value), "bhyve's own words belong in the error"
    assert not standin_vm.process.alive


def test_restore_without_the_kernel_state_file_is_refused_before_bhyve(tmp_path, standin_vm):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    suspended = standin_vm.process
    checkpoint.files[1].unlink()
    with pytest.raises(RestoreError, match=r"s\.ckp\.kern is missing or empty"):
        standin_vm.restore(checkpoint, timeout=30)
    assert standin_vm.process is suspended, "no bhyve was started"


def test_bhyve_itself_refuses_a_restore_without_the_kernel_state(tmp_path, standin_vm):
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    memory, kern, meta = checkpoint.files
    kern.unlink()
    unlisted = replace(checkpoint, files=(memory, meta))  # past the harness's own check
    with pytest.raises(RestoreError, match="Failed to read checkpoint info"):
        standin_vm.restore(unlisted, timeout=30)
    assert not standin_vm.process.alive


def test_bhyvectl_errors_are_explained(tmp_path, standin_vm, standin_host):
    standin_vm.boot(timeout=30)
    (standin_host.bhyve_run_dir / "standin").unlink()  # as if bhyve had no snapshot socket
    with pytest.raises(SuspendError) as failure:
        standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert "/var/run/bhyve" in str(failure.value) or "socket" in str(failure.value)
    assert failure.value.exitcode == 2


def test_destroy_removes_the_kernel_vm_and_its_ledger_entry(standin_vm, standin_host):
    standin_vm.boot(timeout=30)
    standin_vm.destroy()
    standin_vm.destroy()
    assert not (standin_host.vmm_dir / "standin").exists()
    _, entries = read_ledger(standin_vm.ledger.path)
    assert [e for e in entries if e["kind"] in ("bhyve-vm", "process")] == []


def test_a_checkpoint_describing_another_vm_is_rejected(tmp_path, standin_vm, monkeypatch):
    monkeypatch.setenv("STANDIN_META_VMNAME", "somebody_else")
    standin_vm.boot(timeout=30)
    with pytest.raises(SuspendError, match=r"does not describe standin.*somebody_else"):
        standin_vm.checkpoint(tmp_path / "c.ckp", timeout=30)


def test_a_failed_suspend_is_reported_at_once_and_the_vm_runs_on(tmp_path, standin_vm,
                                                                 monkeypatch):
    monkeypatch.setenv("STANDIN_CHECKPOINT_ERROR", "Read-only file system")
    standin_vm.boot(timeout=30)
    start = time.monotonic()
    with pytest.raises(SuspendError, match=r"Read-only file system.*keeps running"):
        standin_vm.suspend(tmp_path / "s.ckp", timeout=60)
    assert time.monotonic() - start < 10, "the failure is in bhyve's output: no need to wait"
    assert standin_vm.state is VMState.RUNNING
    assert standin_vm.process.alive
