"""A failed test keeps its evidence (disk, checkpoints, workload logs) in its results;
results of earlier runs are never overwritten; commands.log lines carry the date."""

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bhyve_snaptest.cli import main
from bhyve_snaptest.config import GuestImage, VMSpec
from bhyve_snaptest.drivers.base import HostSettings, HypervisorDriver, VirtualMachine
from bhyve_snaptest.errors import HarnessError
from bhyve_snaptest.evidence import kept_directories
from bhyve_snaptest.factory import VMFactory
from bhyve_snaptest.ledger import Ledger
from bhyve_snaptest.results import TestResults, open_run_folder
from bhyve_snaptest.workloads import CopyWorkload, WorkloadRun


class IdleVM(VirtualMachine):
    """A VM that is built (scratch directory, disk) but never started."""

    driver_name = "idle"

    def boot_argv(self):
        return ["true"]

    def restore_argv(self, checkpoint):
        return ["true"]

    def ssh_endpoint(self):
        raise AssertionError("never started")

    host_address = "10.0.2.2"
    guest_cidr = "10.0.2.15/24"

    def _prepare_launch(self, restoring):
        pass

    def _after_launch(self, restoring, timeout):
        pass

    def _save(self, path, *, keep_running, timeout, disk_copy=None):
        raise AssertionError("never started")


class IdleDriver(HypervisorDriver):
    name = "idle"
    program = "idle-hypervisor"

    def host_checks(self):
        return []

    def provenance(self):
        return {}

    def new_vm(self, spec, context):
        return IdleVM(spec, context)

    def plan(self, spec, workdir, checkpoint):
        return []


@pytest.fixture
def factory_for(tmp_path, private_state_root):
    made = []

    def make(policy: str) -> VMFactory:
        ledger = Ledger.open_new(private_state_root)
        results = TestResults(open_run_folder(tmp_path / "results", ledger.run_id) / "test_x")
        factory = VMFactory(IdleDriver(HostSettings()), ledger, results, keep_scratch=policy)
        made.append((ledger, results))
        return factory

    yield make
    for ledger, results in made:
        results.close()
        ledger.close()


def _vm(factory: VMFactory) -> VirtualMachine:
    image = GuestImage(name="linux", directory=factory.results.directory,
                       ssh_key=factory.results.directory / "key")
    vm = factory.build(VMSpec(name="vm1", image=image, data_disk_bytes=1 << 30))
    (vm.workdir / "cycle1.ckp").write_bytes(b"memory")
    return vm


def test_a_failed_tests_disk_and_checkpoint_move_into_its_results(factory_for,
                                                                private_state_root):
    factory = factory_for("on-failure")
    vm = _vm(factory)
    note = factory.evidence_note(failed=True)
    kept = factory.kept_path(vm.workdir)
    assert f"kept (disk, checkpoints): {kept}" in note

    assert factory.destroy_all(failed=True) == []

    assert (kept / "cycle1.ckp").read_bytes() == b"memory"
    assert (kept / "data.img").stat().st_size == 1 << 30, "the disk must stay sparse"
    assert not vm.workdir.exists()
    assert [e["path"] for e in kept_directories(private_state_root)] == [str(kept)]


@pytest.mark.parametrize(("policy", "failed"), [("on-failure", False), ("never", True)])
def test_scratch_is_deleted_unless_the_policy_keeps_it(factory_for, policy, failed):
    factory = factory_for(policy)
    vm = _vm(factory)
    factory.destroy_all(failed=failed)
    assert not vm.workdir.exists()
    assert not (factory.results.directory / "scratch").exists()


def test_kept_scratch_is_listed_and_removed_by_clean(factory_for, capsys):
    factory = factory_for("always")
    vm = _vm(factory)
    factory.destroy_all(failed=False)
    kept = factory.kept_path(vm.workdir)

    assert main(["clean"]) == 0
    assert str(kept) in capsys.readouterr().out
    assert kept.exists(), "clean without --kept keeps evidence"
    assert main(["clean", "--kept"]) == 0
    assert f"removed kept {kept}" in capsys.readouterr().out
    assert not kept.exists()


def test_workload_logs_of_a_guest_that_cannot_answer_say_why(factory_for):
    factory = factory_for("on-failure")
    vm = _vm(factory)
    vm.workload_run = WorkloadRun([CopyWorkload(1 << 20, 0.5)], "/data/snaptest")
    factory.destroy_all(failed=True)
    note = (factory.results.directory / "workloads" / "NOT-COLLECTED").read_text()
    assert note.startswith("not collected: vm1 is created, no SSH; the guest's disk cannot "
                           "be read on this host"), note


@pytest.mark.skipif(shutil.which("mke2fs") is None and not Path("/sbin/mke2fs").exists(),
                    reason="needs e2fsprogs to make an ext2 disk")
def test_a_stopped_guests_workload_logs_are_read_from_its_disk(factory_for):
    """A guest that does not answer any more (a failed restore) still has its logs on its
    disk: they are read from it, without the copy's data files."""
    factory = factory_for("on-failure")
    vm = _vm(factory)
    vm.spec = replace(vm.spec, image=replace(vm.spec.image, data_disk_mount="/data"))
    source = factory.results.directory / "disk-content"
    (source / "snaptest" / "copy").mkdir(parents=True)
    (source / "snaptest" / "copy" / "log").write_text("copying\n")
    (source / "snaptest" / "copy" / "src").write_bytes(b"x" * 4096)
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-d", str(source), str(vm.disk), "16M"],
                   check=True)
    vm.workload_run = WorkloadRun([CopyWorkload(1 << 20, 0.5)], "/data/snaptest")

    factory.destroy_all(failed=True)

    logs = factory.results.directory / "workloads"
    assert (logs / "copy" / "log").read_text() == "copying\n"
    assert not (logs / "copy" / "src").exists(), "the copy's data is not evidence"
    assert "read from the disk of vm1" in (logs / "FROM-DISK").read_text()
    assert (factory.kept_path(vm.workdir) / "data.img").exists()


def test_a_run_never_writes_into_an_earlier_runs_results(tmp_path):
    first = open_run_folder(tmp_path, "20261204T100000-1")
    second = open_run_folder(tmp_path, "20261204T110000-2")
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert first.is_dir()
    with pytest.raises(HarnessError, match="refusing"):
        open_run_folder(tmp_path, "20261204T100000-1")
    TestResults(second / "t").close()
    with pytest.raises(HarnessError, match="refusing to overwrite"):
        TestResults(second / "t")


def test_commands_log_lines_carry_the_date(tmp_path):
    results = TestResults(tmp_path / "t")
    results.record_command("qemu-system-x86_64 -m 256M")
    results.close()
    line = (tmp_path / "t" / "commands.log").read_text()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d qemu", line), line


def test_findings_name_their_vm(factory_for):
    factory = factory_for("never")
    vm = _vm(factory)
    vm.findings.append("/dev/vmm/vm1 remained after the suspend")
    assert factory.findings() == ["vm1: /dev/vmm/vm1 remained after the suspend"]
    factory.destroy_all()
