"""The UEFI boot disk, built from files and read back: GPT, ESP contents, UKI sections."""

import shutil
import subprocess
import uuid

import pytest

from bhyve_snaptest.errors import ImageError
from bhyve_snaptest.images import bootdisk

MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(
    not bootdisk.EFI_STUB.is_file() or shutil.which("mcopy") is None
    or shutil.which("sfdisk") is None,
    reason="needs systemd-boot-efi, mtools and fdisk (./snaptest setup installs them)")


@pytest.fixture
def built(tmp_path):
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * 300_000)
    initrd.write_bytes(b"I" * 200_000)
    uki, esp, disk = tmp_path / "BOOTX64.EFI", tmp_path / "esp.img", tmp_path / "disk.img"
    bootdisk.write_uki(kernel=kernel, initrd=initrd, cmdline="console=ttyS0 panic=0",
                       target=uki)
    bootdisk.write_esp(uki, esp)
    bootdisk.write_disk(esp, disk, 16 * MiB, disk_id=uuid.UUID(int=7))
    return tmp_path, uki, disk


def _section(pe, name, tmp_path):
    out = tmp_path / f"{name.strip('.')}.bin"
    subprocess.run(["objcopy", "-O", "binary", f"--only-section={name}", str(pe), str(out)],
                   check=True)
    return out.read_bytes()


def test_the_disk_has_an_esp_and_an_empty_data_partition(built):
    _, _, disk = built
    esp, data = bootdisk.partitions(disk)
    assert (esp.number, esp.offset, esp.size, esp.type_guid, esp.name) == \
        (1, MiB, 64 * MiB, bootdisk.ESP_TYPE, "ESP")
    assert (data.number, data.offset, data.size, data.type_guid, data.name) == \
        (2, 65 * MiB, 16 * MiB, bootdisk.LINUX_DATA_TYPE, "snapdata")
    with disk.open("rb") as f:
        f.seek(data.offset)
        assert f.read(MiB).count(0) == MiB, "the guest formats it at its first boot"
    assert disk.stat().st_blocks * 512 < 8 * MiB, "sparse: the ESP's free space is a hole"


def test_the_esp_holds_the_uki_at_the_default_boot_path(built):
    tmp_path, uki, disk = built
    esp = tmp_path / "esp-read.img"
    with disk.open("rb") as f:
        f.seek(MiB)
        esp.write_bytes(f.read(64 * MiB))
    out = tmp_path / "read.efi"
    subprocess.run(["mcopy", "-i", str(esp), "::/EFI/BOOT/BOOTX64.EFI", str(out)], check=True)
    assert out.read_bytes() == uki.read_bytes()


def test_the_uki_carries_kernel_initrd_and_command_line_after_the_stub(built):
    tmp_path, uki, _ = built
    assert _section(uki, ".linux", tmp_path) == b"K" * 300_000
    assert _section(uki, ".initrd", tmp_path) == b"I" * 200_000
    assert _section(uki, ".cmdline", tmp_path) == b"console=ttyS0 panic=0"
    assert b"ID=debian" in _section(uki, ".osrel", tmp_path)
    headers = subprocess.run(["objdump", "-h", str(uki)], capture_output=True, text=True,
                             check=True).stdout
    vmas = {line.split()[1]: int(line.split()[3], 16) for line in headers.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}
    stub_end = bootdisk._stub_image_end(bootdisk.EFI_STUB)
    assert stub_end <= vmas[".osrel"] < vmas[".cmdline"] < vmas[".linux"] < vmas[".initrd"]
    assert vmas[".initrd"] >= vmas[".linux"] + 300_000, "sections must not overlap"


def test_a_missing_stub_names_the_package(tmp_path):
    with pytest.raises(ImageError, match="systemd-boot-efi"):
        bootdisk.write_uki(kernel=tmp_path, initrd=tmp_path, cmdline="", target=tmp_path / "x",
                           stub=tmp_path / "no-stub")
