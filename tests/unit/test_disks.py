"""sparse_copy: the copy equals the source and keeps its holes."""

import os

from fixtures.disks import sparse_copy

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
