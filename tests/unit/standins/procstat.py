"""A stand-in for FreeBSD's procstat ``-h -s PID`` and ``-C -f PID``, run against the bhyve
stand-in (a Linux process): not procstat, and labelled so wherever a test uses it.

It reads the stand-in bhyve's command line from /proc/PID/cmdline and prints what a main
bhyve built with snapshots would show, in procstat_cred.c's and procstat_files.c's formats
(tests/unit/samples/procstat-*.txt): the guest memory device, the disk, the snapshot socket
and, with ``-t``, the checkpoint directory. ``STANDIN_CAPSICUM`` picks the bhyve modelled:

* ``sandboxed`` (default): capability mode, every descriptor limited as upstream limits it;
* ``off``: no capability mode, every descriptor with every right (WITHOUT_CAPSICUM);
* ``extra-socket-rights``: sandboxed, but the snapshot socket also has CAP_CREATE ("cr");
* ``leftover-restore-fd``: sandboxed, but the file given to ``-r`` (and its .kern) still
  open, as a restore that never closed them would leave them.
"""

import os
import sys
from pathlib import Path

MODE = os.environ.get("STANDIN_CAPSICUM", "sandboxed")
RUN = Path(os.environ["BHYVE_EMULATION_RUN_DIR"])
VMM = Path(os.environ["BHYVE_EMULATION_VMM_DIR"])
#: procstat's abbreviations for CAP_ALL, as the WITHOUT_CAPSICUM sample shows them.
EVERY_RIGHT = ("rd,wr,se,mm,cr,fe,fy,ft,cd,cf,cm,cn,fc,fl,fp,fk,fs,sf,fu,ls,lt,md,mf,mn,rs,"
               "rt,sl,un,lo,eg,es,ed,el,ag,as,ad,ac,at,bd,co,gp,gs,ld,pk,ru,sd,st,sh,ev,io,"
               "prd,pwr,re")


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _after(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv else None


def _row(pid: int, fd: int, kind: str, rights: str, name: str, *, protocol: str = "-") -> str:
    if MODE == "off":
        rights = EVERY_RIGHT
    return f"{pid:5d} bhyve            {fd:5d} {kind} rw------ {rights:>40s} {protocol:<3s} {name}"


def files(pid: int) -> list[str]:
    argv = _argv(pid)
    name = argv[-1]
    disk = next(a.split(",", 2)[2] for a in argv if a.startswith("3:0,"))
    socket_rights = "rd,wr,at,gs,re,sd" + (",cr" if MODE == "extra-socket-rights" else "")
    lines = ["  PID COMM                FD T FLAGS    CAPABILITIES PRO NAME",
             _row(pid, 3, "v", "rd,wr,se,mm,io,prd,pwr,mmr,mmw,mrw,re,sd", str(VMM / name)),
             _row(pid, 8, "v", "rd,wr,se,fy,fp,fs,ev,io,prd,pwr,re,sd", disk),
             _row(pid, 10, "s", socket_rights, f"0 0 {RUN / name}", protocol="UDS")]
    directory = _after(argv, "-t")
    if directory is not None:
        lines.append(_row(pid, 11, "v", "rd,se,fs,cr,lo,re", str(Path(directory).absolute())))
    restored = _after(argv, "-r")
    if restored is not None and MODE == "leftover-restore-fd":
        lines += [_row(pid, 12, "v", "rd,se,fs,prd,re", restored),
                  _row(pid, 13, "v", "rd,se,fs,prd,re", restored + ".kern")]
    return lines


def cred(pid: int) -> str:
    flag = "-" if MODE == "off" else "C"
    return f"{pid:5d} bhyve                0     0     0     0     0     0   022 {flag}     0"


def main() -> int:
    args = sys.argv[1:]
    pid = int(args[-1])
    if not Path(f"/proc/{pid}").exists():
        print(f"procstat: kinfo_getproc(): No such process ({pid})", file=sys.stderr)
        return 1
    if args[:2] == ["-h", "-s"]:
        print(cred(pid))
    elif args[:2] == ["-C", "-f"]:
        print("\n".join(files(pid)))
    else:
        print(f"procstat stand-in: unsupported arguments {args}", file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main())
