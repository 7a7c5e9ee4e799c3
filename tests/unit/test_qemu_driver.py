"""The QEMU driver's contracts that need no VM: command lines, accelerator choice, plan."""

import shlex
from pathlib import Path

import pytest

from bhyve_snaptest.cli import main
from bhyve_snaptest.config import GuestImage, VMSpec
from bhyve_snaptest.drivers import get_driver
from bhyve_snaptest.drivers.base import Checkpoint, HostSettings, VMContext
from bhyve_snaptest.drivers.qemu import QemuDriver, choose_accel
from bhyve_snaptest.errors import ConfigError, ExitStatus, PrerequisiteMissing
from bhyve_snaptest.ledger import Ledger


def _image(tmp_path: Path) -> GuestImage:
    return GuestImage(name="linux", directory=tmp_path, ssh_key=tmp_path / "id_ed25519",
                      disk=tmp_path / "disk.img", config_drive=True)


def _vm(tmp_path, settings=None, **spec_args):
    spec = VMSpec(name="guest0", image=_image(tmp_path), **spec_args)
    driver = QemuDriver(settings or HostSettings(accel="tcg"))
    return driver.new_vm(spec, VMContext(tmp_path, tmp_path, Ledger(tmp_path), print))


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_boot_command_mirrors_the_seed_configuration(tmp_path):
    vm = _vm(tmp_path)
    argv = vm.boot_argv()
    assert _option(argv, "-smp") == ["1"]
    assert _option(argv, "-m") == ["256M"]
    assert _option(argv, "-serial") == ["stdio"]
    assert _option(argv, "-accel") == ["tcg"]
    devices = _option(argv, "-device")
    assert "ich9-ahci,id=ahci0" in devices
    assert "ide-hd,drive=disk0,bus=ahci0.0,bootindex=0" in devices, "the firmware boots it"
    assert "ide-cd,drive=cidata,bus=ide.1" in devices, "the config drive, an AHCI CD"
    assert f"virtio-net-pci,netdev=net0,mac={vm.mac_address}" in devices
    drives = _option(argv, "-drive")
    assert any("if=pflash" in d and "readonly=on" in d for d in drives)
    assert any(f"file={tmp_path / 'OVMF_VARS.fd'}" in d for d in drives), \
        "each VM needs its own copy of the UEFI variable store"
    assert "-kernel" not in argv and "-append" not in argv, "UEFI boots the disk"
    assert f"hostfwd=tcp:127.0.0.1:{vm.ssh_port}-10.0.2.15:22" in _option(argv, "-netdev")[0]
    vm.guest_address = "10.0.2.20"
    assert vm.guest_cidr == "10.0.2.20/24"
    assert "-10.0.2.20:22" in _option(vm.boot_argv(), "-netdev")[0]


@pytest.mark.parametrize(("disk", "nic", "device"), [
    ("virtio-blk", "virtio-net", "virtio-blk-pci,drive=disk0,bootindex=0"),
    ("nvme", "e1000", "nvme,drive=disk0,serial=snaptest0,bootindex=0"),
])
def test_device_models_map_to_qemu_devices(tmp_path, disk, nic, device):
    argv = _vm(tmp_path, disk_model=disk, nic_model=nic).boot_argv()
    assert device in _option(argv, "-device")
    assert not any("ahci" in d for d in _option(argv, "-device"))


def test_restore_is_the_boot_command_waiting_for_incoming_state(tmp_path):
    vm = _vm(tmp_path)
    checkpoint = Checkpoint(tmp_path / "c.ckp", (tmp_path / "c.ckp",), "qemu", vm.spec,
                            "suspend")
    assert vm.restore_argv(checkpoint) == [*vm.boot_argv(), "-incoming", "defer"]


def test_a_cross_build_restore_runs_the_other_qemu_with_the_same_arguments(tmp_path):
    vm = _vm(tmp_path, HostSettings(accel="tcg", restore_with="/opt/qemu-8/bin/qemu"))
    checkpoint = Checkpoint(tmp_path / "c.ckp", (tmp_path / "c.ckp",), "qemu", vm.spec,
                            "suspend")
    boot = vm.boot_argv()
    assert boot[0] == "qemu-system-x86_64"
    assert vm.restore_argv(checkpoint) == ["/opt/qemu-8/bin/qemu", *boot[1:], "-incoming",
                                           "defer"]


def test_a_missing_restore_build_blocks_the_run_before_anything_boots():
    driver = QemuDriver(HostSettings(restore_with="/nonexistent/qemu"))
    (check,) = [c for c in driver.host_checks() if c.name.startswith("restore build")]
    assert check.name == "restore build /nonexistent/qemu"
    assert "--restore-with" in check.fix
    assert driver.restore_build_provenance() == {"restore_with": [
        {"name": "/nonexistent/qemu", "path": None, "sha256": None, "version": None}]}


def test_unknown_device_model_is_rejected_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown disk model 'scsi'.*ahci-hd"):
        VMSpec(name="g", image=_image(tmp_path), disk_model="scsi")


def test_auto_accel_needs_vmx_or_svm_not_just_dev_kvm(tmp_path):
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")
    nested = tmp_path / "cpuinfo-nested"
    nested.write_text("flags\t: fpu vme sse2 hypervisor\n")
    bare = tmp_path / "cpuinfo-bare"
    bare.write_text("flags\t: fpu vme vmx sse2\n")

    assert choose_accel("auto", cpuinfo=nested, kvm_device=kvm)[0] == "tcg"
    assert choose_accel("auto", cpuinfo=bare, kvm_device=kvm)[0] == "kvm"
    assert choose_accel("auto", cpuinfo=bare, kvm_device=tmp_path / "missing")[0] == "tcg"
    assert choose_accel("kvm", cpuinfo=nested, kvm_device=kvm)[0] == "kvm"
    with pytest.raises(ConfigError, match="choose one of auto, kvm, tcg"):
        choose_accel("hvf")


def test_preflight_names_the_missing_firmware_and_the_package(tmp_path):
    driver = QemuDriver(HostSettings(qemu_binary="sh", firmware_code=tmp_path / "nope.fd"))
    with pytest.raises(PrerequisiteMissing, match=r"nope\.fd not found.*apt-get install ovmf"):
        driver.preflight()


def test_preflight_names_a_missing_qemu():
    driver = QemuDriver(HostSettings(qemu_binary="qemu-system-nonexistent"))
    with pytest.raises(PrerequisiteMissing, match="qemu-system-nonexistent not found"):
        driver.preflight()


def test_unknown_hypervisor_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown hypervisor 'xen'"):
        get_driver("xen", HostSettings())


def test_plan_prints_boot_suspend_and_restore(capsys, tmp_path):
    assert main(["plan", "--hypervisor", "qemu", "--accel", "tcg", "--image",
                 str(tmp_path / "img"), "--checkpoint", str(tmp_path / "s.ckp")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["boot", "suspend", "restore"]
    boot = shlex.split(lines[0].removeprefix("boot: "))
    assert boot[0] == "qemu-system-x86_64"
    assert f"exec:cat > {tmp_path / 's.ckp'}" in lines[1]
    assert "-incoming defer" in lines[2]
    assert f"exec:cat {tmp_path / 's.ckp'}" in lines[2]


def test_plan_rejects_a_bad_option_value(capsys):
    assert main(["plan", "--memory", "lots"]) == ExitStatus.USAGE_ERROR
    assert "bad size 'lots'" in capsys.readouterr().err
