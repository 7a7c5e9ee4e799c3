"""The bhyve driver's contracts, proven on Linux: command lines against upstream's option
strings, the seed's exact commands, and the process protocol against stand-in bhyve and
bhyvectl executables (tests/unit/standins) that follow upstream's behaviour."""

import os
import shlex
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bhyve_snaptest.bhyve.getopt import (
    OPTSTRING_14,
    OPTSTRING_14_NO_SNAPSHOT,
    OPTSTRING_D34547,
    OPTSTRING_MAIN,
    OPTSTRING_MAIN_NO_SNAPSHOT,
    GetoptError,
    parse_bhyve_argv,
    parse_bhyvectl_argv,
)
from bhyve_snaptest.bhyve.usage import BhyveFeatures
from bhyve_snaptest.cli import main
from bhyve_snaptest.config import GuestImage, VMSpec
from bhyve_snaptest.drivers.base import Checkpoint, HostSettings, VMContext, VMState
from bhyve_snaptest.drivers.bhyve import BhyveDriver, BhyveVM
from bhyve_snaptest.drivers.bhyve_host import kernel_snapshot_problem
from bhyve_snaptest.errors import (
    ConfigError,
    HarnessError,
    PrerequisiteMissing,
    RestoreError,
    SuspendError,
)
from bhyve_snaptest.ledger import Ledger, read_ledger
from bhyve_snaptest.network import TapNetwork
from bhyve_snaptest.reservations import SUBNET_POOL
from tests.unit.standins import executable as standin_executable

SEED_BOOT = ("bhyve -c 1 -m 256M -H -A -P -s 0:0,hostbridge -s 1:0,lpc "
             "-l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd -s 2:0,virtio-net,tap0 "
             "-s 3:0,ahci-hd,main.img -l com1,stdio freebsd_guest")


@pytest.fixture(autouse=True)
def on_freebsd(monkeypatch):
    """These tests are about real bhyve's protocol: the host is taken for FreeBSD (its
    commands are the stand-ins'); the Linux host's own choices are tested apart."""
    monkeypatch.setattr("platform.system", lambda: "FreeBSD")


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
@pytest.mark.parametrize(("disk", "nic"), [("ahci-hd", "virtio-net"), ("ahci-hd", "e1000"),
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
    assert vm.save_target("s.ckp") == tmp_path / "ckp" / "s.ckp"
    assert vm.save_request("suspend", tmp_path / "ckp" / "s.ckp") == (
        ["bhyvectl", "--suspend=s.ckp", "--vm=freebsd_guest"], tmp_path / "ckp")
    assert vm.save_request("suspend", tmp_path / "elsewhere" / "s.ckp") == (
        ["bhyvectl", f"--suspend={tmp_path / 'elsewhere' / 's.ckp'}", "--vm=freebsd_guest"],
        None), "aimed outside -t: sent as it is, for a sandboxed bhyve to refuse"
    with pytest.raises(ConfigError, match="needs bhyve -t"):
        BhyveDriver(settings).check_settings(BhyveFeatures(snapshot=True,
                                                           checkpoint_dir_option=False))


def test_plan_with_a_checkpoint_dir_runs_bhyvectl_there_with_the_bare_name(capsys,
                                                                          tmp_path):
    assert main(["plan", "--hypervisor", "bhyve", "--image", str(tmp_path / "none"),
                 "--checkpoint-dir", str(tmp_path / "ckp")]) == 0
    boot, suspend, restore = capsys.readouterr().out.splitlines()
    assert f" -t {tmp_path / 'ckp'} " in boot
    assert suspend == (f"suspend: cd {tmp_path / 'ckp'} && bhyvectl --suspend=suspend.ckp "
                       "--vm=freebsd_guest")
    assert f" -r {tmp_path / 'ckp' / 'suspend.ckp'} " in restore


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


def test_off_freebsd_the_driver_runs_only_the_emulation_and_says_so(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Linux")
    driver = BhyveDriver(HostSettings(bhyve_emulation="d34547"))
    assert driver.label == "bhyve (emulated over QEMU, personality d34547)"
    assert Path(driver.settings.bhyve_binary).parent.name == "d34547"
    assert "not bhyve" in Path(driver.settings.bhyve_binary).read_text()
    assert driver.provenance()["kernel_bhyve_snapshot"].startswith("not applicable")
    names = [check.name for check in driver.host_checks()]
    assert "vmm.ko loaded" not in names and "iproute2" in names


def test_on_freebsd_the_label_is_plain_bhyve():
    assert BhyveDriver(HostSettings()).label == "bhyve"


# -- the process protocol, against the stand-ins ------------------------------------------


class _NoNetwork(TapNetwork):
    """The addresses without ifconfig (the stand-ins need no interfaces)."""

    def create(self, ledger, record, user=""):
        self.created = True

    def remove(self, ledger, record, user=""):
        self.created = False


#: Upstream releases the stand-ins can behave as (tests/unit/standins/bhyve.py says how).
PERSONALITIES = ("13", "14", "main", "d34547")


@pytest.fixture(params=PERSONALITIES)
def personality(request, monkeypatch):
    """Each protocol test runs against every upstream personality of the stand-ins."""
    monkeypatch.setenv("BHYVE_EMULATION_PERSONALITY", request.param)
    return request.param


@pytest.fixture
def standin_host(tmp_path, monkeypatch, personality):
    vmm, run = tmp_path / "vmm", tmp_path / "run"
    vmm.mkdir()
    run.mkdir()
    monkeypatch.setenv("BHYVE_EMULATION_VMM_DIR", str(vmm))
    monkeypatch.setenv("BHYVE_EMULATION_RUN_DIR", str(run))
    return HostSettings(bhyve_binary=standin_executable(tmp_path, "bhyve"),
                        bhyvectl_binary=standin_executable(tmp_path, "bhyvectl"),
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


def test_the_socket_a_suspend_leaves_is_gone_after_the_vm(tmp_path, standin_vm, standin_host):
    """vm_checkpoint() exits without unlinking /var/run/bhyve/NAME: the harness made the VM,
    so it removes the socket with it (the next run's sweep would, after a kill)."""
    socket = standin_host.bhyve_run_dir / "standin"
    standin_vm.boot(timeout=30)
    standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert socket.is_socket(), "upstream leaves it"
    recorded = [e["path"] for e in read_ledger(standin_vm.ledger.path)[1]
                if e.get("kind") == "path"]
    assert str(socket) in recorded
    standin_vm.destroy()
    assert not socket.exists()


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


# -- what a reading of upstream showed would break on a real host (issue: bhyve path) ------


def test_a_suspend_exit_status_of_its_own_is_a_suspend(tmp_path, standin_vm, monkeypatch):
    """Forks that define BHYVE_EXIT_SUSPEND (5) exit with it after a suspend; upstream's
    vm_checkpoint() exits 0. Both are suspends once the three files check out."""
    monkeypatch.setenv("STANDIN_SUSPEND_EXIT", "5")
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert standin_vm.state is VMState.SUSPENDED
    assert standin_vm.process.exit_status.exitcode == 5
    assert standin_vm.ended_as_suspended(standin_vm.process.exit_status)
    standin_vm.restore(checkpoint, timeout=30)


def test_exit_0_without_a_checkpoint_is_not_a_suspend(tmp_path, standin_vm, standin_host):
    """Exit 0 is also a reboot: without complete files it is never taken for a suspend."""
    standin_vm.boot(timeout=30)
    original = standin_vm._check_files
    standin_vm._check_files = lambda files: (files[0].unlink(), original(files))
    with pytest.raises(SuspendError, match=r"s\.ckp is missing or empty"):
        standin_vm.suspend(tmp_path / "s.ckp", timeout=30)


def test_a_vm_left_behind_by_the_suspend_is_a_finding_and_is_destroyed(
        tmp_path, standin_vm, standin_host, monkeypatch):
    """vm_destroy() in capability mode may fail silently (libvmmapi ignores the result):
    the suspend stands, the leftover VM is reported and destroyed."""
    monkeypatch.setenv("STANDIN_DESTROY_FAILS", "1")
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    assert checkpoint.size_bytes > 0 and standin_vm.state is VMState.SUSPENDED
    assert not (standin_host.vmm_dir / "standin").exists()
    [finding] = standin_vm.findings
    assert "remained after the suspend" in finding and "bhyvectl --destroy" in finding


@pytest.mark.parametrize("personality", ["d34547"], indirect=True)
def test_with_a_checkpoint_dir_the_checkpoint_is_where_bhyve_wrote_it(tmp_path, standin_vm,
                                                                      standin_host):
    """-t DIR: the files are in DIR, bhyvectl runs there with the bare name (a
    capability-mode bhyve cannot openat() an absolute path), and the restore uses them."""
    ckp_dir = tmp_path / "ckp"
    ckp_dir.mkdir()
    standin_vm.settings = replace(standin_host, checkpoint_dir=ckp_dir)
    standin_vm.boot(timeout=30)
    checkpoint = standin_vm.suspend(standin_vm.save_target("s.ckp"), timeout=30)
    assert checkpoint.path == ckp_dir / "s.ckp"
    assert all(f.parent == ckp_dir for f in checkpoint.files)
    standin_vm.restore(checkpoint, timeout=30)
    assert "Restoring kernel structs" in standin_vm.process.console_text()


def test_an_earlier_failure_in_the_output_is_not_read_again(tmp_path, standin_vm,
                                                            monkeypatch):
    """The first save fails (its words stay in the output); the next one succeeds and
    must not be judged by the old words."""
    monkeypatch.setenv("STANDIN_CHECKPOINT_ERROR_ONCE", "No space left on device")
    standin_vm.boot(timeout=30)
    with pytest.raises(SuspendError, match="No space left on device"):
        standin_vm.suspend(tmp_path / "first.ckp", timeout=30)
    checkpoint = standin_vm.suspend(tmp_path / "second.ckp", timeout=30)
    assert checkpoint.path == tmp_path / "second.ckp"


def test_options_are_detected_by_running_bhyve(standin_host, personality):
    """`bhyve -r x -h` and `bhyve -t DIR -h`: getopt stops at an unknown option with exit
    1 before -h exits 0 (bhyverun.c main()). D34547 has -t but no usage line for it."""
    features = BhyveDriver(standin_host).probe_features()
    assert features.snapshot
    assert features.checkpoint_dir_option == (personality == "d34547")


@pytest.mark.parametrize(("conftxt", "problem"), [
    ("options\tSCHED_ULE\noptions\tBHYVE_SNAPSHOT\n", None),
    ("options\tSCHED_ULE\n", "kernel was built without options BHYVE_SNAPSHOT"),
    ("", None),  # no INCLUDE_CONFIG_FILE: nothing to conclude, bhyve will say
])
def test_the_kernel_must_have_bhyve_snapshot(conftxt, problem):
    """vmm's snapshot ioctls exist only under #ifdef BHYVE_SNAPSHOT (sys/dev/vmm/vmm_dev.c);
    without them the first save fails with 'Failed to snapshot struct vhpet'."""
    found = kernel_snapshot_problem(conftxt)
    assert found is None if problem is None else problem in found


def test_bhyvectl_must_offer_suspend(standin_host, monkeypatch):
    BhyveDriver(standin_host).check_bhyvectl()
    monkeypatch.setenv("BHYVE_EMULATION_NO_SNAPSHOT", "1")
    with pytest.raises(PrerequisiteMissing, match=r"no --suspend.*WITH_BHYVE_SNAPSHOT"):
        BhyveDriver(standin_host).check_bhyvectl()


def test_nvme_is_refused_before_booting(tmp_path):
    """pci_nvme.c has no pe_snapshot: a save would stop at it (ENOTSUP, 'Failed to
    snapshot nvme@pci...; ret=45'). Said before anything boots."""
    with pytest.raises(ConfigError, match=r"nvme.*no snapshot support.*pci_nvme\.c"):
        _vm(tmp_path, disk_model="nvme")


def test_a_restored_vm_gets_the_saved_vms_uefi_variables(tmp_path, standin_vm, standin_host):
    """The bootrom and its variable store are not in the checkpoint (only guest memory);
    bhyve -r maps them again from -l bootrom, so a VM restored elsewhere needs the saved
    VM's own VARS copy, as it was."""
    vars_template = tmp_path / "VARS.fd"
    vars_template.write_bytes(b"template")
    standin_vm.settings = replace(standin_host, firmware_vars=vars_template)
    standin_vm.boot(timeout=30)
    standin_vm.firmware_vars.write_bytes(b"written by the guest")
    checkpoint = standin_vm.suspend(tmp_path / "s.ckp", timeout=30)
    other = BhyveVM(standin_vm.spec, VMContext(tmp_path / "other", tmp_path / "results",
                                               standin_vm.ledger, lambda line: None),
                    standin_vm.settings, standin_vm.features, _NoNetwork(SUBNET_POOL[0]))
    (tmp_path / "other").mkdir()
    other.disk.write_bytes(b"disk")
    other.restore(checkpoint, timeout=30)
    try:
        assert other.firmware_vars.read_bytes() == b"written by the guest"
    finally:
        other.destroy()


# -- the sandbox, against the bhyve and procstat stand-ins (not FreeBSD) ---------------------


@pytest.fixture
def standin_procstat(tmp_path, monkeypatch):
    """procstat on PATH: the stand-in of tests/unit/standins/procstat.py."""
    bin_dir = tmp_path / "procstat-bin"
    bin_dir.mkdir()
    (bin_dir / "procstat").symlink_to(standin_executable(tmp_path, "procstat"))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("personality", ["main"], indirect=True)
@pytest.mark.parametrize("case", [
    ("sandboxed", "yes", []),
    ("off", "yes", ["capability mode"]),
    ("off", "auto", []),
    ("extra-socket-rights", "yes", ["snapshot socket limited"]),
    ("extra-socket-rights", "auto", []),
    ("leftover-restore-fd", "auto", ["checkpoint files closed"]),
], ids=lambda case: f"{case[0]}-{case[1]}")
def test_the_sandbox_is_judged_by_expect_capsicum(tmp_path, standin_vm, standin_procstat,
                                                   monkeypatch, case):
    """The three bhyves of the acceptance: no capability mode fails --expect-capsicum=yes
    (verify's setting; auto leaves it to the Capsicum scenario's xfail), a snapshot socket
    with extra rights fails yes, a checkpoint file left open after a restore fails."""
    mode, expect, failing = case
    monkeypatch.setenv("STANDIN_CAPSICUM", mode)
    vm = standin_vm
    vm.boot(timeout=30)
    checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)
    vm.restore(checkpoint, timeout=30)
    state, failures = vm.sandbox(expect, closed=checkpoint.files)
    assert [f.split(":")[0] for f in failures] == failing, failures
    checks = state["capsicum"]["checks"]
    assert checks["capability mode"]["status"] == ("fail" if mode == "off" else "pass")


@pytest.mark.parametrize("personality", ["main"], indirect=True)
def test_the_sandbox_of_a_bhyve_that_is_not_running_is_unknown(standin_vm, standin_procstat):
    state, failures = standin_vm.sandbox("yes")
    assert state == {"capsicum": "unknown: bhyve is not running"}
    assert failures == ["the sandbox could not be checked: bhyve is not running"]
    assert standin_vm.sandbox("auto")[1] == []


@pytest.mark.parametrize("personality", ["d34547"], indirect=True)
def test_with_minus_t_a_save_aimed_outside_is_refused_and_bhyve_runs_on(tmp_path, standin_vm,
                                                                          standin_host):
    """(The D34547 stand-in, in capability mode: openat() of an absolute path fails.)"""
    ckp_dir = tmp_path / "ckp"
    ckp_dir.mkdir()
    standin_vm.settings = replace(standin_host, checkpoint_dir=ckp_dir)
    standin_vm.boot(timeout=30)
    outside = tmp_path / "outside" / "s.ckp"
    with pytest.raises(SuspendError, match="may create files only inside the -t directory"
                       ) as failure:
        standin_vm.suspend(outside, timeout=30)
    assert str(outside) in str(failure.value)
    assert standin_vm.state is VMState.RUNNING and standin_vm.process.alive


@pytest.mark.parametrize("personality", ["d34547"], indirect=True)
def test_a_missing_minus_t_directory_is_bhyves_error_reported_as_such(tmp_path, standin_vm,
                                                                       standin_host):
    standin_vm.settings = replace(standin_host, checkpoint_dir=tmp_path / "missing")
    with pytest.raises(HarnessError, match=r"cannot open checkpoint directory .*missing.*"
                                           r"the -t directory .*missing does not exist"):
        standin_vm.boot(timeout=30)
    assert not (tmp_path / "missing").exists(), "the harness did not make it"


def _release(directory: Path, personality: str) -> tuple[str, str]:
    """bhyve and bhyvectl stand-ins that behave as ``personality`` whatever the
    environment says: another release's build, for a cross-build restore."""
    directory.mkdir()
    programs = []
    for name in ("bhyve", "bhyvectl"):
        wrapper = directory / name
        wrapper.write_text(f"#!/bin/sh\nBHYVE_EMULATION_PERSONALITY={personality} exec "
                           f"{standin_executable(directory.parent, name)} \"$@\"\n")
        wrapper.chmod(0o755)
        programs.append(str(wrapper))
    return programs[0], programs[1]


@pytest.mark.parametrize("releases", [
    ("13", "main", "Failed to restore PCI device state.", "FreeBSD 13.x's layout"),
    ("main", "13", "Failed to restore kernel structs.", "the layout of FreeBSD 14 and main"),
], ids=["13-to-main", "main-to-13"])
def test_a_checkpoint_in_another_releases_layout_is_refused_naming_its_writer(
        tmp_path, monkeypatch, fake_guest, releases):
    """A cross-build restore (--restore-with) between releases whose FILE.meta layouts
    differ ends in a RestoreError with bhyve's own words and the layout's writer."""
    saved_by, restored_by, words, layout = releases
    monkeypatch.setenv("BHYVE_EMULATION_PERSONALITY", saved_by)
    vmm, run = tmp_path / "vmm", tmp_path / "run"
    vmm.mkdir()
    run.mkdir()
    monkeypatch.setenv("BHYVE_EMULATION_VMM_DIR", str(vmm))
    monkeypatch.setenv("BHYVE_EMULATION_RUN_DIR", str(run))
    other_bhyve, other_bhyvectl = _release(tmp_path / f"release-{restored_by}", restored_by)
    settings = HostSettings(bhyve_binary=standin_executable(tmp_path, "bhyve"),
                            bhyvectl_binary=standin_executable(tmp_path, "bhyvectl"),
                            vmm_dir=vmm, bhyve_run_dir=run, restore_with=other_bhyve,
                            restore_with_bhyvectl=other_bhyvectl)
    ledger = Ledger.open_new(tmp_path / "state")
    (tmp_path / "results").mkdir()
    image = GuestImage(name="freebsd", directory=tmp_path, ssh_key=fake_guest.key_file,
                       disk=tmp_path / "disk.img")
    vm = BhyveVM(VMSpec(name="standin", image=image),
                 VMContext(tmp_path, tmp_path / "results", ledger, lambda line: None),
                 settings, BhyveFeatures(snapshot=True, checkpoint_dir_option=False),
                 _NoNetwork(SUBNET_POOL[0]))
    vm.disk.write_bytes(b"disk at boot")
    vm.ssh_endpoint = lambda: fake_guest
    try:
        vm.boot(timeout=30)
        checkpoint = vm.suspend(tmp_path / "s.ckp", timeout=30)
        with pytest.raises(RestoreError) as failure:
            vm.restore(checkpoint, timeout=30)
        message = str(failure.value)
        assert words in message, "bhyve's own words belong in the error"
        assert f"s.ckp.meta is in {layout}" in message
        assert f"{other_bhyve} tried to restore it" in message
        assert vm.restore_argv(checkpoint)[0] == other_bhyve
        assert not vm.process.alive
    finally:
        vm.destroy()
        ledger.close()
