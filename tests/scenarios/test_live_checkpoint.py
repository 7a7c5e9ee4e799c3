"""Live checkpoints (``bhyvectl --checkpoint``): the VM goes on, and every restore from the
checkpoint resumes at the checkpoint's moment.

The busy guest is checkpointed and runs on until its workloads end PASS; it writes a marker
file after the checkpoint. Then it is destroyed, and the same checkpoint is restored into a
new VM twice, one after the other. Each restored guest must be at the checkpoint's moment,
not where the original ended: no marker, the copy unfinished and no further than the
original went, and then every workload must end PASS again. The marker is looked for after
the restored guest dropped its caches, so that a restore given the disk as the original left
it, not as it was at the checkpoint, shows the marker. A guest that cannot drop its caches
(FreeBSD has no such knob) would answer from its checkpoint-time memory, so there the check
is recorded as not applicable, never as passed; where the host can read the guest's disk
(an ext data disk), the checkpoint's disk copy is also checked for the marker from the host.
The restores run in turn
because they are the same VM (name, MAC, address), which bhyve's /dev/vmm and the guest
network cannot hold twice at once. Restoring must not change the checkpoint or its disk.
"""

import time

import pytest

from bhyve_snaptest.config import MiB
from bhyve_snaptest.damage import sha256_sums
from bhyve_snaptest.disks import ext_path_exists
from bhyve_snaptest.guest_files import seen_after_cache_drop, write_synced
from bhyve_snaptest.images.common import sha256_file
from bhyve_snaptest.scenario import LifecycleChecks, start_workloads

#: Enough copy to be running at the checkpoint and after each restore, small enough that
#: the original and both restores finish it in a few minutes under TCG.
COPY_BYTES = 128 * MiB
RESTORES = 2
MARKER = "written-after-the-checkpoint"

pytestmark = [pytest.mark.scenario, pytest.mark.copy_source(size=COPY_BYTES)]


def marker_on_disk(vm, disk, marker: str) -> str:
    """"present" or "absent" on the checkpoint's disk copy, read from the host; "not
    applicable" (with why) where the host cannot read the guest's file system."""
    mount = vm.spec.image.data_disk_mount
    if mount is None:
        return "not applicable: the host cannot read this guest's file system"
    inside = "/" + marker.removeprefix(mount).lstrip("/")
    return "present" if ext_path_exists(disk, inside) else "absent"


def restore_and_finish(vm_factory, checkpoint, run, number: int, *, marker: str,
                       timeout: float, test_results) -> dict:
    """Restore the checkpoint into a new VM, look at it as it resumes, let its workloads
    finish, keep their files, destroy it; what it saw, for the assertions."""
    timeline = test_results.timeline
    restored = vm_factory.build_from(checkpoint)
    checks = LifecycleChecks(restored)
    with timeline.span("restore", f"restore {number}"):
        restore_s = restored.restore(checkpoint, timeout)
    checks.after(f"restore {number}")
    with timeline.span("reconnect", f"reconnect {number}"):
        restore_to_ssh_s = restored.reconnect(timeout)
    at_resume = run.states(restored.guest)
    marker_seen = seen_after_cache_drop(restored.guest, marker)
    run.announce(restored.guest, "restore")
    with timeline.span("verdict wait", f"verdict wait {number}"):
        states = run.wait_verdicts(restored.guest, timeout)
    checks.after(f"restore {number}: workloads done")
    run.collect(restored.guest, test_results.directory / f"workloads-restore{number}")
    restored.destroy()
    return {
        "restore_s": round(restore_s, 3), "restore_to_ssh_s": round(restore_to_ssh_s, 3),
        "copied_bytes_at_resume": int(at_resume["copy"].values["copied_bytes"]),
        "copy_verdict_at_resume": at_resume["copy"].verdict,
        "ping_seq_at_resume": int(at_resume["ping"].values["last_seq"] or -1),
        "marker_seen": marker_seen,
        "verdicts": {n: s.verdict for n, s in states.items()},
    }


def test_every_restore_of_a_live_checkpoint_resumes_at_its_moment(
        vm_booted, vm_factory, scenario, test_results):
    """The original and two restores of its live checkpoint all end PASS; the restores
    start where the checkpoint was taken."""
    vm, timeout, metrics = vm_booted, scenario.step_timeout_s, test_results.metrics
    original_checks = LifecycleChecks(vm)
    original_checks.after("boot")
    # One interruption for every VM: the checkpoint's pause for the original, the restore
    # for each restored VM (the announcement comes after the checkpoint, so it is not in it).
    timeline = test_results.timeline
    run = start_workloads(vm, scenario, expected_restores=1, copy_bytes=COPY_BYTES,
                          phase=test_results.phase)
    copied_before = int(run.states(vm.guest)["copy"].values["copied_bytes"])

    start = time.monotonic()
    with timeline.span("suspend", "live checkpoint") as note:  # the guest pauses for it
        checkpoint = vm.checkpoint(vm.save_target("live.ckp"), timeout)
        note.append(f"({checkpoint.size_bytes / 1e6:.0f} MB)")
    metrics["checkpoint_s"] = round(time.monotonic() - start, 3)
    metrics["checkpoint_bytes"] = checkpoint.size_bytes
    metrics["disk_taken"] = checkpoint.disk_taken
    sums, disk_sum = sha256_sums(checkpoint), sha256_file(checkpoint.disk)
    original_checks.after("live checkpoint")
    run.announce(vm.guest, "checkpoint")
    marker = f"{vm.spec.image.guest_dir}/{MARKER}"
    write_synced(vm.guest, marker)
    with timeline.span("verdict wait", "original's verdict wait"):
        original = run.wait_verdicts(vm.guest, timeout)
    original_checks.after("original's workloads done")
    final_seq = int(original["ping"].values["last_seq"])
    metrics["original"] = {n: s.verdict for n, s in original.items()}
    vm.destroy()

    restores = [restore_and_finish(vm_factory, checkpoint, run, number, marker=marker,
                                   timeout=timeout, test_results=test_results)
                for number in range(1, RESTORES + 1)]
    metrics["marker_on_checkpoint_disk"] = marker_on_disk(vm, checkpoint.disk, marker)
    metrics["copied_bytes_before_checkpoint"] = copied_before
    metrics["copy_progress_at_checkpoint"] = round(copied_before / COPY_BYTES, 4)
    metrics["original_final_ping_seq"] = final_seq
    metrics["restores"] = restores

    assert metrics["original"] == {"copy": "PASS", "ping": "PASS", "memory": "PASS"}
    assert metrics["marker_on_checkpoint_disk"] != "present", \
        "the checkpoint's disk holds a file written after the checkpoint"
    for number, restore in enumerate(restores, 1):
        assert restore["marker_seen"] != "present", \
            f"restore {number} sees a file written after the checkpoint: not its moment"
        assert restore["copy_verdict_at_resume"] is None, \
            f"restore {number}: the copy had already ended, as in the original"
        assert copied_before <= restore["copied_bytes_at_resume"] < COPY_BYTES
        assert restore["ping_seq_at_resume"] < final_seq
        assert restore["verdicts"] == {"copy": "PASS", "ping": "PASS", "memory": "PASS"}, \
            f"restore {number}"
    assert sha256_sums(checkpoint) == sums, "a restore changed the checkpoint"
    assert sha256_file(checkpoint.disk) == disk_sum, \
        "the checkpoint's disk changed after the checkpoint (the VM ran on, or a restore wrote)"
