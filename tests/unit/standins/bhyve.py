"""A stand-in for bhyve(8) that follows its process protocol, for the driver's unit tests.

What it imitates (shared/reference/bhyve-snapshot.md): the command line parses with
upstream's option string; the console is on stdio; /dev/vmm/NAME exists while the VM does;
the snapshot socket /var/run/bhyve/NAME appears once devices are up (after a restore has
loaded); a checkpoint request writes FILE (in chunks, as bhyve on a terminal does), FILE.kern
and FILE.meta, and then, as the resumed guest would, writes to its disk; a suspend instead
destroys the VM and exits 0; a restore takes vCPUs and memory from FILE.meta (not -c/-m) and exits 1
with upstream's message when the memory file's size does not match it.
The two directories come from STANDIN_VMM_DIR and STANDIN_RUN_DIR; STANDIN_META_VMNAME
makes it write a FILE.meta that names another VM; STANDIN_CHECKPOINT_ERROR makes the save
fail as upstream's does: an error on stderr, nothing to bhyvectl, the VM running on;
STANDIN_KILLED_DURING_SAVE makes it die by SIGKILL with half the memory file written.
Requests are JSON lines, not nvlists: the transport is not what is under test.
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from fixtures.bhyve.getopt import OPTSTRING_MAIN, parse_bhyve_argv

VMM = Path(os.environ["STANDIN_VMM_DIR"])
RUN = Path(os.environ["STANDIN_RUN_DIR"])
MEMORY_CHUNKS = 16
KERN_STRUCTS = ("vhpet", "vm", "vioapic", "vlapic", "vmcx", "vatpit", "vatpic", "vpmtmr",
                "vrtc")


def memory_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text) << 20


def devices(options: list[tuple[str, str]]) -> list[str]:
    return [value.split(",")[1] for flag, value in options if flag == "s"]


def disk(options: list[tuple[str, str]]) -> str:
    return next(value.split(",")[2] for flag, value in options
                if flag == "s" and value.split(",")[1] == "ahci-hd")



def write_checkpoint(path: Path, name: str, memsize: int, ncpus: int, devs: list[str]) -> None:
    """Memory, then blobs back to back in FILE.kern (kernel structs, then devices), then
    FILE.meta describing them, as vm_checkpoint does."""
    with path.open("wb") as f:
        for chunk in range(1, MEMORY_CHUNKS + 1):
            f.truncate(memsize * chunk // MEMORY_CHUNKS)
            time.sleep(0.01)
    blobs = [(d, 64) for d in KERN_STRUCTS] + [(d, 128) for d in [*devs, "atkbdc"]]
    offsets = [sum(size for _, size in blobs[:i]) for i in range(len(blobs))]
    path.with_name(path.name + ".kern").write_bytes(b"\0" * sum(s for _, s in blobs))
    entries = [{"device": d, "size": size, "file_offset": offset}
               for (d, size), offset in zip(blobs, offsets, strict=True)]
    meta = {
        "basic metadata": {"ncpus": ncpus,
                           "vmname": os.environ.get("STANDIN_META_VMNAME", name),
                           "memsize": memsize,
                           "memflags": 0},
        "kern_structs": entries[:len(KERN_STRUCTS)],
        "devices": entries[len(KERN_STRUCTS):],
    }
    path.with_name(path.name + ".meta").write_text(json.dumps(meta, indent=2))


def main() -> int:
    parsed = parse_bhyve_argv(sys.argv[1:], OPTSTRING_MAIN)
    options = dict(parsed.options)
    name = parsed.positional[0]
    memsize, ncpus = memory_bytes(options["m"]), int(options["c"])
    if "r" in options:
        if not Path(options["r"] + ".kern").exists():  # load_restore_file() fails
            print(f"Failed to open kernel data file: No such file or directory\n"
                  f"Failed to read checkpoint info from file: '{options['r']}'.",
                  file=sys.stderr, flush=True)
            return 1
        meta = json.loads(Path(options["r"] + ".meta").read_text())["basic metadata"]
        memsize, ncpus = int(meta["memsize"]), int(meta["ncpus"])
        print("Pausing pci devs...\nRestoring vm mem...", flush=True)
        if Path(options["r"]).stat().st_size != memsize:
            print("vm_snapshot_mem: mem size mismatch", file=sys.stderr, flush=True)
            return 1
        print("Restoring pci devs...\nRestoring kernel structs...\nResuming pci devs...",
              flush=True)
    (VMM / name).touch()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    (RUN / name).unlink(missing_ok=True)
    listener.bind(str(RUN / name))
    listener.listen(1)
    print(f"stand-in bhyve: {name} running", flush=True)
    while True:
        conn, _ = listener.accept()
        request = json.loads(conn.makefile().readline())
        conn.close()
        if request["cmd"] == "poweroff":
            (VMM / name).unlink()
            return 1
        if os.environ.get("STANDIN_CHECKPOINT_ERROR"):  # upstream: print, resume, run on
            print(f"Failed to create checkpoint file: {os.environ['STANDIN_CHECKPOINT_ERROR']}",
                  file=sys.stderr, flush=True)
            continue
        if os.environ.get("STANDIN_KILLED_DURING_SAVE"):
            with Path(request["filename"]).open("wb") as memory:
                memory.truncate(memsize // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        write_checkpoint(Path(request["filename"]), name, memsize, ncpus,
                         devices(parsed.options))
        if request["suspend"]:
            (RUN / name).unlink()
            (VMM / name).unlink()
            return 0
        with Path(disk(parsed.options)).open("ab") as data:  # the guest runs on
            data.write(b" and on")


if __name__ == "__main__":
    sys.exit(main())
