"""Damaged copies of a checkpoint: the damage lands where each hypervisor keeps that part,
and the original is never touched."""

import pytest

from bhyve_snaptest.config import GuestImage, VMSpec
from bhyve_snaptest.damage import damaged_copy, sha256_sums
from bhyve_snaptest.drivers.base import Checkpoint

STATE = b"device state " * 10000


def _checkpoint(directory, names):
    directory.mkdir()
    files = []
    for name in names:
        path = directory / name
        path.write_bytes(b"memory " * 10000 if name == names[0] else STATE)
        files.append(path)
    spec = VMSpec(name="vm", image=GuestImage(name="x", directory=directory,
                                               ssh_key=directory / "key"))
    return Checkpoint(files[0], tuple(files), "bhyve", spec, "suspend")


@pytest.fixture(params=[("c.ckp", "c.ckp.kern", "c.ckp.meta"), ("c.ckp",)],
                ids=["bhyve", "qemu"])
def original(request, tmp_path):
    return _checkpoint(tmp_path / "original", request.param)


def test_truncated_halves_the_memory_file(original, tmp_path):
    before = sha256_sums(original)
    damaged = damaged_copy(original, tmp_path, "truncated")
    assert damaged.path.stat().st_size == original.path.stat().st_size // 2
    assert sha256_sums(original) == before


def test_corrupted_state_hits_the_device_state(original, tmp_path):
    before = sha256_sums(original)
    damaged = damaged_copy(original, tmp_path, "corrupted-state")
    state = next(f for f in damaged.files if f.name.endswith(".kern")) \
        if len(damaged.files) > 1 else damaged.path
    assert state.read_bytes().endswith(b"\xa5" * 1024)
    assert sha256_sums(original) == before


def test_missing_state_removes_the_device_state(original, tmp_path):
    before = sha256_sums(original)
    damaged = damaged_copy(original, tmp_path, "missing-state")
    left = sorted(f.name for f in damaged.files if f.exists())
    expected = ["c.ckp", "c.ckp.meta"] if len(original.files) > 1 else []
    assert left == expected
    assert sha256_sums(original) == before


def test_an_unknown_damage_names_the_choices(original, tmp_path):
    with pytest.raises(ValueError, match="truncated, corrupted-state, missing-state"):
        damaged_copy(original, tmp_path, "burnt")
