"""Bad checkpoints are refused: a clear RestoreError, a hypervisor that exits (never hangs),
and the original checkpoint unchanged.

Damaged copies (truncated memory, corrupted or missing device state) and mismatched
restores (other memory size, other NIC) of one good checkpoint. A mismatch the hypervisor
would not notice is refused by the harness before the hypervisor starts (bhyve -r takes
memory size and vCPUs from FILE.meta and ignores -m and -c), and so is a missing file
(QEMU 7.2 waits forever on an empty incoming stream); everything else must be refused by
the hypervisor, which must then have ended.
"""

import pytest

from bhyve_snaptest.damage import damaged_copy, sha256_sums
from bhyve_snaptest.errors import RestoreError

pytestmark = pytest.mark.scenario


@pytest.mark.parametrize("case", ["truncated", "corrupted-state", "missing-state",
                                  "other-memory-size", "other-nic"])
def test_a_bad_checkpoint_is_refused_and_left_unchanged(vm_booted, vm_factory, scenario, case):
    """Restoring the bad checkpoint fails clearly; the hypervisor exits; nothing changed."""
    vm, timeout = vm_booted, scenario.step_timeout_s
    good = vm.suspend(vm.save_target("good.ckp"), timeout)
    before = sha256_sums(good)

    changes: dict[str, object] = {}
    checkpoint = good
    if case == "other-memory-size":
        changes = {"memory_mb": vm.spec.memory_mb * 2}
    elif case == "other-nic":
        changes = {"nic_model": "e1000" if vm.spec.nic_model != "e1000" else "virtio-net"}
    else:
        checkpoint = damaged_copy(good, vm_factory.scratch_dir(case), case)
    target = vm_factory.build_from(checkpoint, **changes)

    with pytest.raises(RestoreError) as failure:
        target.restore(checkpoint, timeout)

    message = str(failure.value)
    assert "restore failed" in message
    if target.process is None:
        assert "cannot be restored into" in message
    else:
        assert "command:" in message, "the error must show the hypervisor's command line"
        assert not target.process.alive, "the hypervisor must end"
    assert sha256_sums(good) == before, "the original checkpoint was changed"
