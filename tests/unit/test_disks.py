"""sparse_copy: the copy equals the source and keeps its holes; a guest's ext disk is read
without mounting it."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from bhyve_snaptest.disks import ext_path_exists, sparse_copy
from bhyve_snaptest.errors import HarnessError
from bhyve_snaptest.images.bootdisk import DATA_PARTITION, partitions, write_disk

MiB = 1024 * 1024


def test_a_sparse_copy_has_the_same_bytes_and_no_more_blocks(tmp_path):
    source, target = tmp_path / "disk.img", tmp_path / "copy.img"
    with source.open("wb") as disk:
        os.ftruncate(disk.fileno(), 64 * MiB)
        disk.seek(8 * MiB)
        disk.write(b"\x5a" * MiB)
        disk.seek(63 * MiB)
        disk.write(b"end")

    sparse_copy(source, target)

    assert target.stat().st_size == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()
    assert target.stat().st_blocks * 512 < 4 * MiB, "the holes were filled in"


def test_a_sparse_copy_of_an_empty_image_is_all_hole(tmp_path):
    source, target = tmp_path / "empty.img", tmp_path / "copy.img"
    with source.open("wb") as disk:
        os.ftruncate(disk.fileno(), 16 * MiB)
    sparse_copy(source, target)
    assert target.stat().st_size == 16 * MiB and target.stat().st_blocks == 0


def _ext2(image: Path, content: Path, *options: str) -> None:
    """An 8 MiB ext2 file system in ``image`` holding /snaptest/marker."""
    (content / "snaptest").mkdir(parents=True)
    (content / "snaptest" / "marker").write_text("x")
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", *options, "-d", str(content),
                    str(image), "8M"], check=True)


@pytest.mark.skipif(shutil.which("mke2fs") is None and not Path("/sbin/mke2fs").exists(),
                    reason="needs e2fsprogs to make an ext2 disk")
def test_a_file_is_looked_up_in_an_ext_disk_without_mounting_it(tmp_path):
    image = tmp_path / "disk.img"
    _ext2(image, tmp_path / "content")
    assert ext_path_exists(image, "/snaptest/marker")
    assert not ext_path_exists(image, "/snaptest/other")
    with pytest.raises(HarnessError, match="cannot look up"):
        ext_path_exists(tmp_path / "not-a-disk.img", "/snaptest/marker")


@pytest.mark.skipif(shutil.which("mke2fs") is None and not Path("/sbin/mke2fs").exists(),
                    reason="needs e2fsprogs to make an ext2 disk")
def test_the_data_partition_of_a_gpt_boot_disk_is_read_at_its_offset(tmp_path):
    """The Linux guest's disk: ESP, then the ext2 data partition the guest made."""
    esp, image = tmp_path / "esp.img", tmp_path / "disk.img"
    with esp.open("wb") as f:
        f.truncate(64 * MiB)
    write_disk(esp, image, 8 * MiB, disk_id=uuid.UUID(int=1))
    [data] = [p for p in partitions(image) if p.name == DATA_PARTITION]
    _ext2(image, tmp_path / "content", "-E", f"offset={data.offset}")
    assert ext_path_exists(image, "/snaptest/marker")
    assert not ext_path_exists(image, "/snaptest/other")
