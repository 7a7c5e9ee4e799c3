"""A stand-in for bhyve(8) with no guest: the emulated bhyve's outside without QEMU.

This is not bhyve and runs no guest. The driver's unit tests talk to it because it is fast;
what it shares with the emulated bhyve (options, usage, FILE.kern and FILE.meta per
personality, the restore checks, where a save goes) is bhyve_snaptest.emulated_bhyve.upstream,
which names the upstream sources. The personality is BHYVE_EMULATION_PERSONALITY (default
``main``). Its own behaviours, from usr.sbin/bhyve/snapshot.c and bhyverun.c:

* A suspend ends with ``vm_destroy(ctx); exit(0)`` in every upstream version read; the
  socket ``/var/run/bhyve/NAME`` is NOT unlinked (a stale socket stays until the next bhyve
  of that name unlinks and binds it). STANDIN_SUSPEND_EXIT=5 exits as forks that define
  BHYVE_EXIT_SUSPEND do; STANDIN_DESTROY_FAILS=1 leaves /dev/vmm/NAME behind, as
  vm_destroy() (libvmmapi, void, result ignored) can in capability mode.
* A restore loads the files first and only then binds the socket (init_checkpoint_thread()
  after the restore block in main()); the restore takes a moment.

Switches: BHYVE_EMULATION_VMM_DIR and BHYVE_EMULATION_RUN_DIR (the two directories),
STANDIN_META_VMNAME (a FILE.meta naming another VM), STANDIN_CHECKPOINT_ERROR (every save
fails as upstream's do: an error on stderr, nothing to bhyvectl, the VM running on),
STANDIN_CHECKPOINT_ERROR_ONCE (only the first save fails), STANDIN_KILLED_DURING_SAVE
(SIGKILL with half the memory file written). Requests are JSON lines, not nvlists: the
transport is not what is under test.
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from bhyve_snaptest.emulated_bhyve.upstream import (
    SavedVM,
    load_restore_file,
    memory_bytes,
    parse_command_line,
    pci_slots,
    restore_finished,
    restore_memory_checked,
    save_target,
    write_kern_and_meta,
)

VMM = Path(os.environ["BHYVE_EMULATION_VMM_DIR"])
RUN = Path(os.environ["BHYVE_EMULATION_RUN_DIR"])
PERSONALITY = os.environ.get("BHYVE_EMULATION_PERSONALITY", "main")
MEMORY_CHUNKS = 16
#: How long loading a checkpoint takes before bhyve knows whether it fits.
RESTORE_S = 0.3


def disk(options: list[tuple[str, str]]) -> str:
    return next(value.split(",")[2] for flag, value in options
                if flag == "s" and value.split(",")[1] == "ahci-hd")


def write_checkpoint(path: Path, vm: SavedVM, pci: list[tuple[str, str]]) -> None:
    """Memory (in chunks, as bhyve on a terminal does), FILE.kern, then FILE.meta."""
    with path.open("wb") as f:
        for chunk in range(1, MEMORY_CHUNKS + 1):
            f.truncate(vm.memsize * chunk // MEMORY_CHUNKS)
            time.sleep(0.01)
    write_kern_and_meta(path, PERSONALITY, vm, pci)


def restore(path: str, pci: list[tuple[str, str]]) -> tuple[int, int] | None:
    """load_restore_file() and the restore block of main(); the saved memory size and vCPUs,
    or None after printing upstream's words for a failure."""
    saved = load_restore_file(path)
    if saved is None:
        return None
    time.sleep(RESTORE_S)
    if not restore_memory_checked(path, saved.memsize):
        return None
    if not restore_finished(path, PERSONALITY, pci):
        return None
    return saved.memsize, saved.ncpus


def main() -> int:
    parsed = parse_command_line(sys.argv[1:], PERSONALITY)
    if isinstance(parsed, int):
        return parsed
    options = dict(parsed.options)
    name = parsed.positional[0]
    memsize, ncpus = memory_bytes(options["m"]), int(options["c"])
    if "r" in options:
        restored = restore(options["r"], pci_slots(parsed.options))
        if restored is None:
            return 1
        memsize, ncpus = restored
    (VMM / name).touch()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    (RUN / name).unlink(missing_ok=True)  # init_checkpoint_thread(): unlink, then bind
    listener.bind(str(RUN / name))
    listener.listen(1)
    print(f"stand-in bhyve ({PERSONALITY}): {name} running", flush=True)
    failures_left = 1 if os.environ.get("STANDIN_CHECKPOINT_ERROR_ONCE") else 0
    while True:
        conn, _ = listener.accept()
        request = json.loads(conn.makefile().readline())
        conn.close()
        if request["cmd"] == "poweroff":
            (VMM / name).unlink()
            return 1
        error = os.environ.get("STANDIN_CHECKPOINT_ERROR") or (
            os.environ.get("STANDIN_CHECKPOINT_ERROR_ONCE") if failures_left else None)
        path = save_target(request, options.get("t"))
        if error or isinstance(path, str):  # upstream: print, resume, run on
            failures_left = max(0, failures_left - 1)
            message = path if isinstance(path, str) else \
                f"Failed to create checkpoint file: {error}"
            print(message, file=sys.stderr, flush=True)
            continue
        if os.environ.get("STANDIN_KILLED_DURING_SAVE"):
            with path.open("wb") as memory:
                memory.truncate(memsize // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        vm = SavedVM(os.environ.get("STANDIN_META_VMNAME", name), memsize, ncpus)
        write_checkpoint(path, vm, pci_slots(parsed.options))
        if request["suspend"]:  # vm_destroy(ctx); exit(0): the socket file stays
            if not os.environ.get("STANDIN_DESTROY_FAILS"):
                (VMM / name).unlink()
            return int(os.environ.get("STANDIN_SUSPEND_EXIT", "0"))
        with Path(disk(parsed.options)).open("ab") as data:  # the guest runs on
            data.write(b" and on")


if __name__ == "__main__":
    sys.exit(main())
