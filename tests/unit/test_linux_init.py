"""What the Linux guest's init reads from a config drive: the drive the harness writes,
read back through the ISO's Rock Ridge names (as the guest's isofs shows them), parsed by
init.sh's own functions under busybox sh."""

import io
import subprocess
from pathlib import Path

import pycdlib
import pytest

from bhyve_snaptest.images import cloudinit
from bhyve_snaptest.images.linux import RECIPE_DIR

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+MH4E8KO32N5CXRvXVqvyZVl0+6ue4DobdhU0FqFd+ a@b"
MAC = "58:9c:fc:12:34:56"


def _drive_files(tmp_path: Path, **overrides) -> Path:
    """Write a config drive for the Linux guest; its files, read back, in a directory."""
    arguments = {"hostname": "snaptest-7-1", "ssh_public_key": KEY, "user": "root",
                 "address_cidr": "10.0.2.20/24", "gateway": "10.0.2.2",
                 "interface": "vtnet0", "mac_address": MAC, "guest": "linux"} | overrides
    iso = tmp_path / "cidata.iso"
    cloudinit.make_config_drive(iso, **arguments)
    mounted = tmp_path / "cidata"
    mounted.mkdir()
    drive = pycdlib.PyCdlib()
    drive.open(str(iso))
    try:
        for name in ("meta-data", "user-data", "network-config"):
            out = io.BytesIO()
            drive.get_file_from_iso_fp(out, rr_path=f"/{name}")
            (mounted / name).write_bytes(out.getvalue())
    finally:
        drive.close()
    return mounted


def _read_config(directory: Path) -> subprocess.CompletedProcess:
    script = f'SNAPTEST_INIT_FUNCTIONS=1 . {RECIPE_DIR / "init.sh"}; read_config {directory}'
    return subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, check=False)


def test_the_guest_reads_hostname_key_address_and_gateway(tmp_path):
    result = _read_config(_drive_files(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "hostname=snaptest-7-1", f"key={KEY}", f"mac={MAC}", "address=10.0.2.20/24",
        "gateway=10.0.2.2"]


@pytest.mark.parametrize(("break_it", "reason"), [
    (lambda d: (d / "network-config").unlink(), "config drive has no network-config"),
    (lambda d: (d / "user-data").write_text("#!/bin/sh\n"), "user-data is not #cloud-config"),
    (lambda d: (d / "meta-data").write_text('instance-id: "x"\n'),
     "config drive gives no hostname"),
])
def test_a_malformed_config_drive_is_a_reason_not_a_guess(tmp_path, break_it, reason):
    directory = _drive_files(tmp_path)
    break_it(directory)
    result = _read_config(directory)
    assert result.returncode == 1
    assert result.stderr.strip() == reason
