"""The emulated bhyve on its own (no guest runs here): its command line against upstream's
option strings, bhyve's devices as QEMU's, the three checkpoint files per personality, the
restore checks that come before QEMU, and the labels. The scenarios run it with a guest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bhyve_snaptest.bhyve.errors import explain_bhyvectl_exit
from bhyve_snaptest.bhyve.getopt import OPTSTRING_D34547, parse_bhyve_argv
from bhyve_snaptest.bhyve.meta import check_meta, kern_file_problems, parse_meta
from bhyve_snaptest.emulated_bhyve import PERSONALITIES, install, label
from bhyve_snaptest.emulated_bhyve.bhyve import read_stream_header, stream_header
from bhyve_snaptest.emulated_bhyve.machine import Machine, NotEmulated, qemu_argv, vcpus
from bhyve_snaptest.emulated_bhyve.upstream import SavedVM, progress_line, write_kern_and_meta

SEED = ["-c", "2", "-m", "256M", "-H", "-A", "-P", "-s", "0:0,hostbridge", "-s", "1:0,lpc",
        "-l", "bootrom,/fw/CODE.fd,/vm/VARS.fd", "-s", "2:0,virtio-net,tap7,mac=58:9c:fc:0:0:1",
        "-s", "3:0,ahci-hd,/vm/disk.img", "-s", "4:0,ahci-cd,/vm/cidata.iso",
        "-l", "com1,stdio", "vm1"]
PCI = [("0:0", "hostbridge"), ("1:0", "lpc"), ("2:0", "virtio-net"), ("3:0", "ahci-hd"),
       ("4:0", "ahci-cd")]


def _machine(incoming: bool = False) -> Machine:
    return Machine("vm1", 256 << 20, 2, "qemu-system-x86_64", "tcg", Path("/run/q.sock"),
                   incoming)


def _argv(args: list[str], incoming: bool = False) -> str:
    return " ".join(qemu_argv(_machine(incoming), parse_bhyve_argv(args, OPTSTRING_D34547)))


def test_the_seed_devices_become_the_same_devices_in_the_same_slots():
    line = _argv(SEED)
    assert "-smp 2 -m 256M" in line
    assert "-no-reboot" in line, "bhyve exits 0 on a guest reset; QEMU must not reboot"
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in line
    assert "if=pflash,format=raw,unit=1,file=/vm/VARS.fd" in line
    assert ("-netdev tap,id=net2_0,ifname=tap7,script=no,downscript=no -device "
            "virtio-net-pci,netdev=net2_0,mac=58:9c:fc:0:0:1,addr=0x2.0") in line
    assert "-device ich9-ahci,id=ahci3_0,addr=0x3.0 -device ide-hd,drive=drive3_0," \
           "bus=ahci3_0.0,bootindex=3" in line
    assert "media=cdrom,readonly=on" in line and "ide-cd,drive=drive4_0,bus=ahci4_0.0" in line
    assert "-serial stdio" in line and "-incoming" not in line


def test_a_restore_waits_for_its_stream():
    assert _argv(SEED, incoming=True).endswith("-incoming defer")


@pytest.mark.parametrize(("args", "named"), [
    (["-s", "5:0,virtio-rnd", "vm1"], "device virtio-rnd is not emulated"),
    (["-l", "com2,stdio", "vm1"], "-l com2,stdio"),
    (["-s", "1:3:0,virtio-blk,/d", "vm1"], "only PCI bus 0"),
    (["-G", "1234", "vm1"], "-G"),
])
def test_what_is_not_emulated_is_refused_by_name(args, named):
    with pytest.raises(NotEmulated, match=named):
        _argv(args)


def test_vcpus_takes_the_count_of_either_form():
    assert vcpus("2") == 2 and vcpus("cpus=4,sockets=2") == 4


@pytest.mark.parametrize("personality", PERSONALITIES)
def test_kern_and_meta_describe_the_vm_in_each_releases_layout(tmp_path, personality):
    memory = tmp_path / "vm.ckp"
    tail = os.urandom(5000)  # more than the blobs' total: the first struct grows
    payload = stream_header(300 << 20, tail) + tail
    write_kern_and_meta(memory, personality, SavedVM("vm1", 256 << 20, 2), PCI, payload)
    meta = parse_meta((tmp_path / "vm.ckp.meta").read_text())
    kern = tmp_path / "vm.ckp.kern"
    assert check_meta(meta, vm_name="vm1", memory_bytes=256 << 20, cpus=2, slots=PCI) == []
    assert kern_file_problems(meta, kern.stat().st_size) == []
    layout = json.loads((tmp_path / "vm.ckp.meta").read_text())
    assert ("structs" if personality == "13" else "kern_structs") in layout
    if personality != "13":
        assert "ahci@pci.0.3.0" in [d["device"] for d in layout["devices"]]
    assert read_stream_header(kern) == (300 << 20, len(payload) - len(tail), len(tail))


def test_the_progress_bar_is_print_progress_s():
    """snapshot.c print_progress(): counter, bar to two columns before the edge, a turning
    mark while unfinished."""
    half = progress_line(128 << 20, 256 << 20, 80, turn=1)
    assert half.startswith("\r[128.000MiB / 256.000MiB] |#")
    assert half.endswith("_|") and "-" in half and len(half) == 79
    assert progress_line(256 << 20, 256 << 20, 80).endswith("#|")
    assert progress_line(5 << 20, 8 << 20, 80).startswith("\r[5120.000KiB / 8192.000KiB]")
    assert progress_line(0, 0, 80) == "[0B / 0B]\r\n"


def test_damage_to_kern_is_noticed(tmp_path):
    kern = tmp_path / "vm.ckp.kern"
    tail = b"device state" * 100
    kern.write_bytes(stream_header(10, tail) + tail + b"\0" * 64)
    assert read_stream_header(kern) is not None
    data = bytearray(kern.read_bytes())
    data[-100] ^= 0xFF  # in the tail
    kern.write_bytes(bytes(data))
    assert read_stream_header(kern) is None
    kern.write_bytes(b"\xa5" * 2048)  # bhyve_snaptest.damage's corrupted-state, on a small file
    assert read_stream_header(kern) is None


# -- the programs, before any QEMU starts ----------------------------------------------------

@pytest.fixture
def emulation(tmp_path):
    def installed(personality: str):
        return install(tmp_path, personality, qemu="/nonexistent/qemu", accel="tcg")
    return installed


def _run(program: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("personality", PERSONALITIES)
def test_minus_h_prints_the_releases_usage_and_exits_0(emulation, personality):
    result = _run(emulation(personality).bhyve, "-h")
    assert result.returncode == 0
    assert result.stderr.startswith("Usage: bhyve")
    assert ("-r: path to checkpoint file" in result.stderr) or personality == "13"


@pytest.mark.parametrize(("personality", "status"), [("main", 1), ("14", 1), ("d34547", 0)])
def test_minus_t_is_d34547s_alone(emulation, personality, status, tmp_path):
    result = _run(emulation(personality).bhyve, "-t", str(tmp_path), "-h")
    assert result.returncode == status
    if status:
        assert "illegal option -- t" in result.stderr


def test_a_missing_t_directory_ends_bhyve_before_the_vm(emulation, tmp_path):
    result = _run(emulation("d34547").bhyve, "-t", str(tmp_path / "none"), "-c", "1", "vm1")
    assert result.returncode == 1 and "checkpoint directory" in result.stderr


def test_a_checkpoint_that_is_not_there_is_refused_with_upstreams_words(emulation, tmp_path):
    missing = tmp_path / "none.ckp"
    result = _run(emulation("main").bhyve, "-r", str(missing), "vm1")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Failed to open restore file: No such file or directory",
        f"Failed to read checkpoint info from file: '{missing}'."]


def test_a_device_the_emulation_lacks_ends_it_with_status_4(emulation):
    result = _run(emulation("main").bhyve, "-s", "5:0,virtio-rnd", "vm1")
    assert result.returncode == 4 and "virtio-rnd is not emulated" in result.stderr


def test_bhyvectl_exits_with_errno_as_upstream(emulation):
    installed = emulation("main")
    no_vm = _run(installed.bhyvectl, "--suspend=/tmp/x.ckp", "--vm=vm1")
    assert no_vm.returncode == 1 and "vm_open: vm1 could not be opened" in no_vm.stderr
    (installed.vmm_dir / "vm1").touch()  # a VM with no bhyve listening
    no_socket = _run(installed.bhyvectl, "--suspend=/tmp/x.ckp", "--vm=vm1")
    assert no_socket.returncode == 2, "ENOENT: the snapshot socket is missing"
    assert _run(installed.bhyvectl, "--bogus").returncode == 1


@pytest.mark.parametrize(("args", "line"), [
    (["--suspend-file=/x", "--vm=vm1"], "bhyvectl: unrecognized option `--suspend-file=/x'"),
    (["--vm=vm1", "--suspend"], "bhyvectl: option `--suspend' requires an argument"),
    (["--destroy=1", "--vm=vm1"], "bhyvectl: option `--destroy' doesn't allow an argument"),
])
def test_bhyvectl_complains_in_getopt_longs_words(emulation, args, line):
    """What a driver that calls bhyvectl wrongly meets, and the driver explains."""
    result = _run(emulation("main").bhyvectl, *args)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == line
    assert "Usage: bhyvectl" in result.stderr
    explained = explain_bhyvectl_exit(1, result.stderr, "vm1")
    assert "rejected" in explained and "fix the command line" in explained


def test_the_wrappers_say_what_they_are_and_fix_the_directories(emulation, tmp_path):
    installed = emulation("14")
    text = installed.bhyve.read_text()
    assert "not bhyve" in text and label("14") in text
    assert f"BHYVE_EMULATION_VMM_DIR={installed.vmm_dir}" in text
    assert installed.bhyve.parent.name == "14"
    # One /dev/vmm and one /var/run/bhyve for every release's programs (cross-build restore)
    other = emulation("main")
    assert (installed.vmm_dir, installed.run_dir) == (other.vmm_dir, other.run_dir)
    assert installed.vmm_dir.parent == installed.bhyve.parent.parent
    assert installed.label == "bhyve (emulated over QEMU, personality 14)"
    assert sys.executable in text
