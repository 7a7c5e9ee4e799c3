"""A stand-in for bhyve(8) that follows upstream's process protocol, release by release.

This is not bhyve: no guest runs. It is what the driver's unit tests talk to, and it behaves
as upstream does on the outside, for the personality in STANDIN_PERSONALITY (default
``main``). What each behaviour follows (freebsd/freebsd-src, usr.sbin/bhyve):

* Options: ``bhyverun.c`` main()'s getopt string for the personality (fixtures.bhyve.getopt);
  an unknown option is getopt's "illegal option -- X", then usage(1) (exit 1); ``-h`` is
  usage(0) (exit 0). ``d34547`` adds ``-t DIR``.
* FILE.meta (``snapshot.c`` vm_checkpoint()): ``13`` writes the 13.x layout, a fixed
  ``snapshot_devs[]`` table under ``structs``/``devices`` keyed by ``snapshot_req``, each
  type found once, by the alias target's pe_emu (pci_find_slotted_dev() after the 13.x
  config rework); ``14``, ``main`` and ``d34547`` key PCI devices by ``pi_name``,
  ``"%s@pci.%d.%d.%d"`` of pe_emu (pci_emul.c pci_emul_init()), then ``atkbdc``.
* A suspend ends with ``vm_destroy(ctx); exit(0)`` in every upstream version read; the
  socket ``/var/run/bhyve/NAME`` is NOT unlinked (a stale socket stays until the next bhyve
  of that name unlinks and binds it). STANDIN_SUSPEND_EXIT=5 exits as forks that define
  BHYVE_EXIT_SUSPEND do; STANDIN_DESTROY_FAILS=1 leaves /dev/vmm/NAME behind, as
  vm_destroy() (libvmmapi, void, result ignored) can in capability mode.
* A restore loads the files first (load_restore_file(), then "Restoring vm mem..." with
  "mem size mismatch" on a wrong size) and only then binds the socket
  (init_checkpoint_thread() after the restore block in main()); the restore takes a moment.
* The request's file (bhyvectl.c): ``13`` receives the path as given and opens it from
  bhyve's working directory; ``14``/``main`` receive basename plus the directory bhyvectl
  opened (the nvlist "fddir", review D38858) and write there; ``d34547`` receives the path
  as given too, and with ``-t`` opens it inside the -t directory, refusing a name with a
  directory part (capability mode: openat() of an absolute path fails with ENOTCAPABLE).
* ``-h`` prints the personality's usage; D34547's author says ``-t`` is not in the usage
  text yet, so ``d34547`` prints main's.

Switches: STANDIN_VMM_DIR and STANDIN_RUN_DIR (the two directories), STANDIN_META_VMNAME (a
FILE.meta naming another VM), STANDIN_CHECKPOINT_ERROR (every save fails as upstream's do:
an error on stderr, nothing to bhyvectl, the VM running on), STANDIN_CHECKPOINT_ERROR_ONCE
(only the first save fails), STANDIN_KILLED_DURING_SAVE (SIGKILL with half the memory file
written). Requests are JSON lines, not nvlists: the transport is not what is under test.
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from fixtures.bhyve.getopt import (
    OPTSTRING_13,
    OPTSTRING_14,
    OPTSTRING_D34547,
    OPTSTRING_MAIN,
    GetoptError,
    bsd_getopt,
    parse_bhyve_argv,
)
from fixtures.bhyve.meta import PCI_ALIASES, SNAPSHOT_DEVICES_13, pci_instance_name

VMM = Path(os.environ["STANDIN_VMM_DIR"])
RUN = Path(os.environ["STANDIN_RUN_DIR"])
PERSONALITY = os.environ.get("STANDIN_PERSONALITY", "main")
OPTSTRINGS = {"13": OPTSTRING_13, "14": OPTSTRING_14, "main": OPTSTRING_MAIN,
              "d34547": OPTSTRING_D34547}
USAGE = Path(__file__).parent.parent / "samples" / \
    f"bhyve-usage-{'main' if PERSONALITY == 'd34547' else PERSONALITY}.txt"
MEMORY_CHUNKS = 16
#: How long loading a checkpoint takes before bhyve knows whether it fits.
RESTORE_S = 0.3
KERN_STRUCTS = ("vhpet", "vm", "vioapic", "vlapic", "vmcx", "vatpit", "vatpic", "vpmtmr",
                "vrtc")
#: 13.x snapshot_devs[] in table order (snapshot.c of 13.x).
TABLE_13 = ("atkbdc", "virtio-net", "virtio-blk", "virtio-rnd", "lpc", "fbuf", "xhci",
            "e1000", "ahci", "ahci-hd", "ahci-cd")
assert set(TABLE_13) == SNAPSHOT_DEVICES_13


def usage(status: int) -> int:
    """bhyve_usage(): the usage text on stderr, then exit."""
    print("".join(line for line in USAGE.read_text().splitlines(keepends=True)
                  if not line.startswith("#")), file=sys.stderr, end="", flush=True)
    return status


def memory_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text) << 20


def slots(options: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [tuple(value.split(",")[:2]) for flag, value in options if flag == "s"]


def disk(options: list[tuple[str, str]]) -> str:
    return next(value.split(",")[2] for flag, value in options
                if flag == "s" and value.split(",")[1] == "ahci-hd")


def _blobs(pci: list[tuple[str, str]]) -> tuple[list[dict], list[dict]]:
    """Kernel structs then devices, back to back in FILE.kern, as vm_checkpoint writes."""
    offset = 0

    def entry(key: str, name: object, size: int, **extra: object) -> dict:
        nonlocal offset
        blob = {**extra, key: name, "size": size, "file_offset": offset}
        offset += size
        return blob

    if PERSONALITY == "13":
        kern = [entry("snapshot_req", n, 64, debug_name=s)
                for n, s in enumerate(KERN_STRUCTS, 1)]
        present = {PCI_ALIASES.get(emu, emu) for _, emu in pci} | {"atkbdc"}
        devices = [entry("snapshot_req", name, 128 if name in present else 0)
                   for name in TABLE_13]
        return kern, devices
    kern = [entry("device", s, 64) for s in KERN_STRUCTS]
    devices = [entry("device", pci_instance_name(slot, emu), 128) for slot, emu in pci]
    return kern, [*devices, entry("device", "atkbdc", 128)]


def write_checkpoint(path: Path, name: str, memsize: int, ncpus: int,
                     pci: list[tuple[str, str]]) -> None:
    """Memory (in chunks, as bhyve on a terminal does), FILE.kern, then FILE.meta."""
    with path.open("wb") as f:
        for chunk in range(1, MEMORY_CHUNKS + 1):
            f.truncate(memsize * chunk // MEMORY_CHUNKS)
            time.sleep(0.01)
    kern, devices = _blobs(pci)
    size = sum(e["size"] for e in (*kern, *devices))
    path.with_name(path.name + ".kern").write_bytes(b"\0" * size)
    meta = {"basic metadata": {"ncpus": ncpus,
                               "vmname": os.environ.get("STANDIN_META_VMNAME", name),
                               "memsize": memsize, "memflags": 0},
            "structs" if PERSONALITY == "13" else "kern_structs": kern,
            "devices": devices}
    path.with_name(path.name + ".meta").write_text(json.dumps(meta, indent=2))


def restore(path: str) -> tuple[int, int] | None:
    """load_restore_file() and the restore block of main(); the saved memory size and vCPUs,
    or None after printing upstream's words for a failure."""
    if not Path(path + ".kern").exists():
        print(f"Failed to open kernel data file: No such file or directory\n"
              f"Failed to read checkpoint info from file: '{path}'.", file=sys.stderr,
              flush=True)
        return None
    meta = json.loads(Path(path + ".meta").read_text())["basic metadata"]
    memsize, ncpus = int(meta["memsize"]), int(meta["ncpus"])
    print("Pausing pci devs...\nRestoring vm mem...", flush=True)
    time.sleep(RESTORE_S)
    if Path(path).stat().st_size != memsize:
        print(f"vm_snapshot_mem: mem size mismatch: {Path(path).stat().st_size} vs {memsize}",
              file=sys.stderr, flush=True)
        print("Failed to restore VM memory.", file=sys.stderr, flush=True)
        return None
    print("Restoring pci devs...\nRestoring kernel structs...\nResuming pci devs...",
          flush=True)
    return memsize, ncpus


def target(request: dict, checkpoint_dir: str | None) -> Path | str:
    """Where the save goes, or the error bhyve prints when it cannot open it."""
    name = request["filename"]
    if checkpoint_dir is not None:  # d34547 with -t, in capability mode
        if "/" in name:
            # FreeBSD's strerror(ENOTCAPABLE) (lib/libc/gen/errlst.c); Linux's strerror of
            # the same number is another error's.
            return "Failed to create checkpoint file: Capabilities insufficient"
        return Path(checkpoint_dir) / name
    if "dir" in request:
        return Path(request["dir"]) / name
    return Path(name)


def main() -> int:
    try:  # the getopt loop: an unknown option, or -h, ends bhyve before anything else
        flags, _ = bsd_getopt(sys.argv[1:], OPTSTRINGS[PERSONALITY])
        if any(flag == "h" for flag, _ in flags):
            return usage(0)
        parsed = parse_bhyve_argv(sys.argv[1:], OPTSTRINGS[PERSONALITY])
    except GetoptError as exc:
        print(f"bhyve: {exc.args[0].splitlines()[0]}", file=sys.stderr)
        return usage(1)
    options = dict(parsed.options)
    name = parsed.positional[0]
    if "t" in options and not Path(options["t"]).is_dir():
        # D34547 opens the -t directory before cap_enter() (the author: "I need a file
        # descriptor for a parent directory"); its exact message is not known here, so
        # this one is the stand-in's own.
        print(f"bhyve: cannot open checkpoint directory {options['t']}: "
              f"{os.strerror(2)}", file=sys.stderr, flush=True)
        return 1
    memsize, ncpus = memory_bytes(options["m"]), int(options["c"])
    if "r" in options:
        restored = restore(options["r"])
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
        path = target(request, options.get("t"))
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
        write_checkpoint(path, name, memsize, ncpus, slots(parsed.options))
        if request["suspend"]:  # vm_destroy(ctx); exit(0): the socket file stays
            if not os.environ.get("STANDIN_DESTROY_FAILS"):
                (VMM / name).unlink()
            return int(os.environ.get("STANDIN_SUSPEND_EXIT", "0"))
        with Path(disk(parsed.options)).open("ab") as data:  # the guest runs on
            data.write(b" and on")


if __name__ == "__main__":
    sys.exit(main())
