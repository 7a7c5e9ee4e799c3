"""The copy source the host makes keeps the copy's proof: every 4 KiB block distinct, so a
copy with one block swapped, zeroed or left from an earlier copy fails copy.sh's verdict;
and it lands on the guest's data partition as a file the guest reads."""

import hashlib
import subprocess
import uuid
from importlib import resources
from pathlib import Path

import pytest

from bhyve_snaptest.config import MiB
from bhyve_snaptest.copysource import BLOCK_BYTES, FILE_NAME, place_on_data_disk, write_source
from bhyve_snaptest.disks import e2fsprogs_tool, ext_filesystem
from bhyve_snaptest.errors import ConfigError, HarnessError
from bhyve_snaptest.images.bootdisk import write_disk
from bhyve_snaptest.workloads import CopyWorkload

SIZE_MIB = 2
KEY, EARLIER_KEY = bytes(range(16)), bytes(range(1, 17))


def blocks(data: bytes) -> list[bytes]:
    return [data[i:i + BLOCK_BYTES] for i in range(0, len(data), BLOCK_BYTES)]


@pytest.fixture
def source(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "data" / FILE_NAME
    path.parent.mkdir()
    return path, write_source(path, SIZE_MIB * MiB, KEY)


def test_every_block_of_a_source_is_distinct_and_the_sha256_is_the_files(source, tmp_path):
    path, sha256 = source
    data = path.read_bytes()
    assert len(data) == SIZE_MIB * MiB
    assert hashlib.sha256(data).hexdigest() == sha256
    assert len(set(blocks(data))) == len(data) // BLOCK_BYTES
    earlier = tmp_path / "earlier"
    write_source(earlier, SIZE_MIB * MiB, EARLIER_KEY)
    assert not set(blocks(earlier.read_bytes())) & set(blocks(data)), \
        "a source under another key shares a block"


def test_the_same_key_makes_the_same_source(source, tmp_path):
    path, sha256 = source
    assert write_source(tmp_path / "again", SIZE_MIB * MiB, KEY) == sha256
    assert (tmp_path / "again").read_bytes() == path.read_bytes()


def test_a_source_is_whole_blocks(tmp_path):
    with pytest.raises(HarnessError, match="whole 4096-byte blocks"):
        write_source(tmp_path / "odd", BLOCK_BYTES + 1, KEY)


def swapped(data: bytes, _earlier: bytes) -> bytes:
    parts = blocks(data)
    parts[3], parts[7] = parts[7], parts[3]
    return b"".join(parts)


def zeroed(data: bytes, _earlier: bytes) -> bytes:
    parts = blocks(data)
    parts[5] = bytes(BLOCK_BYTES)
    return b"".join(parts)


def stale(data: bytes, earlier: bytes) -> bytes:
    """Block 5 as an earlier copy (another VM's source) left it."""
    parts = blocks(data)
    parts[5] = blocks(earlier)[5]
    return b"".join(parts)


def untouched(data: bytes, _earlier: bytes) -> bytes:
    return data


def run_copy(tmp_path: Path, source: Path, sha256: str, damage) -> tuple[int, str]:
    """Run copy.sh on the host with the host-made source; its cp writes what ``damage``
    makes of the source (a copy that is wrong in one block, or right)."""
    guest = tmp_path / "guest"
    guest.mkdir()
    for name in ("lib.sh", "copy.sh"):
        script = resources.files("bhyve_snaptest.workloads").joinpath(name).read_bytes()
        (guest / name).write_bytes(script)
    earlier = tmp_path / "earlier"
    write_source(earlier, SIZE_MIB * MiB, EARLIER_KEY)
    bad_copy = tmp_path / "what-cp-writes"
    bad_copy.write_bytes(damage(source.read_bytes(), earlier.read_bytes()))
    assert bad_copy.stat().st_size == source.stat().st_size, "only the sha256 may tell"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cp").write_text(f'#!/bin/sh\n/bin/cat "{bad_copy}" > "$2"\n')
    (bin_dir / "cp").chmod(0o755)
    done = subprocess.run(["sh", str(guest / "copy.sh"), str(SIZE_MIB), str(source), sha256],
                          env={"SNAPTEST_DIR": str(guest), "PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, (guest / "copy" / "verdict").read_text().strip()


@pytest.mark.parametrize("damage", [swapped, zeroed, stale])
def test_a_copy_wrong_in_one_block_fails_the_verdict(source, tmp_path, damage):
    path, sha256 = source
    status, verdict = run_copy(tmp_path, path, sha256, damage)
    assert status == 1
    assert verdict.startswith("FAIL: sha256 of the copy"), verdict


def test_a_right_copy_of_the_host_source_passes(source, tmp_path):
    path, sha256 = source
    assert run_copy(tmp_path, path, sha256, untouched) == (0, "PASS")


def test_a_source_of_another_size_than_the_copy_fails_before_copying(source, tmp_path):
    path, sha256 = source
    guest = tmp_path / "guest"
    guest.mkdir()
    for name in ("lib.sh", "copy.sh"):
        script = resources.files("bhyve_snaptest.workloads").joinpath(name).read_bytes()
        (guest / name).write_bytes(script)
    subprocess.run(["sh", str(guest / "copy.sh"), str(SIZE_MIB + 1), str(path), sha256],
                   env={"SNAPTEST_DIR": str(guest), "PATH": "/usr/bin:/bin"},
                   capture_output=True, timeout=60, check=False)
    verdict = (guest / "copy" / "verdict").read_text().strip()
    assert verdict == f"FAIL: source {path} has {SIZE_MIB * MiB} bytes, not {SIZE_MIB + 1} MiB"
    assert not (guest / "copy" / "dst").exists()


def test_the_workload_hands_the_guest_the_source_and_its_sha256(tmp_path):
    disk = tmp_path / "disk.img"
    esp = tmp_path / "esp.img"
    esp.write_bytes(bytes(64 * MiB))
    write_disk(esp, disk, 16 * MiB, disk_id=uuid.UUID(int=1))
    placed = place_on_data_disk(disk, SIZE_MIB * MiB, tmp_path, "/data")
    assert placed is not None and placed.guest_path == f"/data/{FILE_NAME}"
    assert CopyWorkload(SIZE_MIB * MiB, source=placed).arguments() == \
        [str(SIZE_MIB), "/data/copy-source", placed.sha256]
    with pytest.raises(ConfigError, match="copy source on the disk has 2097152 bytes"):
        CopyWorkload(4 * MiB, source=placed)
    # The file in the partition's ext2 file system is the source, read back by debugfs.
    subprocess.run([e2fsprogs_tool("debugfs"), "-R", f"dump /{FILE_NAME} {tmp_path / 'back'}",
                    ext_filesystem(disk)], check=True, capture_output=True, timeout=60)
    back = (tmp_path / "back").read_bytes()
    assert hashlib.sha256(back).hexdigest() == placed.sha256
    assert write_source(tmp_path / "again", SIZE_MIB * MiB,
                        bytes.fromhex(placed.key_hex)) == placed.sha256
    assert not (tmp_path / "copy-source.d").exists(), "the staging folder is left behind"


def test_a_disk_without_a_data_partition_gets_no_source(tmp_path):
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(MiB))
    assert place_on_data_disk(raw, SIZE_MIB * MiB, tmp_path, "/data") is None
