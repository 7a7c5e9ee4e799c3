"""The Linux guest boots as the seed's guest does and configures itself from its config
drive: UEFI firmware, the disk on ahci-hd, the unified kernel image on its ESP; then the
cidata drive's address, hostname and key (images/linux/init.sh). QEMU only: it is the
Linux guest's driver here.
"""

import subprocess
import time
from dataclasses import replace

import pytest

from bhyve_snaptest.errors import HarnessError
from bhyve_snaptest.images.bootdisk import DATA_PARTITION, ESP_TYPE, partitions

pytestmark = [pytest.mark.scenario, pytest.mark.selftest, pytest.mark.hypervisor("qemu")]

OTHER_ADDRESS = "10.0.2.20"


def test_the_built_image_is_a_uefi_disk_with_a_uki(guest_image, tmp_path):
    """Read back: GPT with the ESP and the data partition, the UKI at the default boot
    path, with its kernel, initramfs and command line."""
    esp, data = partitions(guest_image.disk)
    assert (esp.type_guid, data.name) == (ESP_TYPE, DATA_PARTITION)
    esp_image = tmp_path / "esp.img"
    with guest_image.disk.open("rb") as disk:
        disk.seek(esp.offset)
        esp_image.write_bytes(disk.read(esp.size))
    uki = tmp_path / "BOOTX64.EFI"
    subprocess.run(["mcopy", "-i", str(esp_image), "::/EFI/BOOT/BOOTX64.EFI", str(uki)],
                   check=True, timeout=60)
    headers = subprocess.run(["objdump", "-h", str(uki)], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    assert all(f" {name} " in headers for name in (".osrel", ".cmdline", ".linux", ".initrd"))


def test_a_guest_comes_up_at_the_address_its_config_drive_gives(vm_factory, vm_spec,
                                                                 scenario):
    vm = vm_factory.build(vm_spec)
    vm.guest_address = OTHER_ADDRESS  # QEMU forwards SSH to it; the drive gives it
    vm.prepare_config_drive()
    vm.boot(scenario.boot_timeout_s)  # SSH answers through 10.0.2.20:22 only
    console = vm.process.console_text()
    assert "BdsDxe: starting" in console, "the firmware chose the boot disk"
    assert "EFI stub: Loaded initrd" in console, "the UKI's kernel loaded its initramfs"
    assert f"SNAPTEST-READY ip={OTHER_ADDRESS}" in console


def test_a_guest_without_a_config_drive_fails_its_boot_saying_so(vm_factory, vm_spec,
                                                                 scenario):
    spec = replace(vm_spec, image=replace(vm_spec.image, config_drive=False))
    vm = vm_factory.build(spec)
    start = time.monotonic()
    with pytest.raises(HarnessError, match="no config drive: no ISO 9660 volume labelled "
                                           "cidata within 10 s"):
        vm.boot(scenario.boot_timeout_s)
    assert time.monotonic() - start < scenario.boot_timeout_s, "at once, not at the timeout"
