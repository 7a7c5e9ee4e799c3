"""A FreeBSD-like userland on the host: stand-ins where FreeBSD's tools differ, in one place.

The harness's guest commands and workload scripts are POSIX sh; what differs between a
Linux guest and a FreeBSD guest is the tools they call and what those print. This module
builds a PATH holding:

* stand-ins for the tools whose behaviour differs, each after the FreeBSD source named in
  its comment (and, for the first-boot script, stand-ins that record what root would do:
  pw, ifconfig, service, hostname, chown, swapoff, mount with arguments);
* links to host tools whose behaviour, for what the harness uses, is the same on FreeBSD;
* nothing else: a Linux-only tool (setsid, stat's GNU options, /proc) is "not found".

:class:`FreeBSDShell` runs guest commands there, as the unprivileged login user the FreeBSD
guest has. FreeBSD mounts no /proc (linprocfs is not in the image's fstab): guest paths
under /proc are sent to a directory that does not exist. A few absolute guest paths that
only root could create on the host are moved under the shell's root directory. This is a
stand-in, not FreeBSD: it catches Linux-isms, not every FreeBSD behaviour.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import time
from pathlib import Path

from bhyve_snaptest.commands import CommandResult
from bhyve_snaptest.guest import GuestShell

#: Host tools that behave as FreeBSD's do for the harness's uses (sh is FreeBSD's /bin/sh
#: stand-in: dash and FreeBSD's sh are both POSIX shells without bash extensions).
SAME_TOOLS = ("sh", "cat", "mkdir", "rm", "mv", "chmod", "grep", "sed", "awk", "tail", "head",
              "date", "sleep", "ls", "touch", "sync", "dirname", "cut", "tr", "dd", "nohup",
              "kill", "cp", "cmp", "sha256sum", "timeout", "printf", "env", "expr",
              "od", "true", "false", "test", "[", "tee", "sort", "uniq", "renice",
              "basename", "seq", "xargs")

_LOG = 'if [ -n "${FREEBSD_LOG:-}" ]; then echo "${0##*/} $*" >> "$FREEBSD_LOG"; fi\n'

STANDINS = {
    # usr.bin/wc/wc.c show_cnt(): counts right-aligned in 8 columns ("       3").
    "wc": """#!/bin/sh
/usr/bin/wc "$@" | awk '{ printf "%8s", $1; for (i = 2; i <= NF; i++) printf " %s", $i;
                          printf "\\n" }'
""",
    # sbin/sysctl/sysctl.c S_timeval(): "{ sec = N, usec = N } date".
    "sysctl": """#!/bin/sh
[ "$1 $2" = "-n kern.boottime" ] || exit 1
echo "{ sec = $(($(date +%s) - 120)), usec = 500000 } Fri Dec  4 08:13:20 2026"
""",
    # sbin/ping/ping.c: "icmp_seq=N" replies; an interval below 1 s needs root
    # ("-i interval too short", EX_NOPERM = 77). The guest user is FREEBSD_UID (the login
    # user's 1001 unless set), not whoever runs the tests.
    "ping": """#!/bin/sh
count=1; interval=1
while getopts c:i: opt; do
    case $opt in c) count=$OPTARG ;; i) interval=$OPTARG ;; *) exit 64 ;; esac
done
shift $((OPTIND - 1))
short=$(echo "$interval" | awk '{ print ($1 < 1) }')
if [ "${FREEBSD_UID:-1001}" != 0 ] && [ "$short" = 1 ]; then
    echo "ping: -i interval too short: Operation not permitted" >&2
    exit 77
fi
echo "PING $1 ($1): 56 data bytes"
i=0
while [ "$i" -lt "$count" ]; do
    echo "64 bytes from $1: icmp_seq=$i ttl=64 time=0.100 ms"
    i=$((i + 1)); [ "$i" -lt "$count" ] && sleep "$interval"
done
exit 0
""",
    # sbin/swapon/swapon.c swaplist(): a header line, then one line per swap device.
    "swapctl": """#!/bin/sh
echo "Device:       1024-blocks     Used:"
for device in ${FREEBSD_SWAP:-}; do echo "$device     1048576        0"; done
""",
    # sbin/mount/mount.c prmount(): "DEVICE on DIR (TYPE, OPTIONS)"; with arguments, the
    # first-boot script's tmpfs mount, recorded; FREEBSD_MOUNT_FAILS makes it fail.
    "mount": """#!/bin/sh
""" + _LOG + """if [ $# -gt 0 ]; then
    [ -z "${FREEBSD_MOUNT_FAILS:-}" ] && exit 0
    echo "mount: tmpfs: Operation not permitted" >&2
    exit 1
fi
echo "/dev/gpt/rootfs on / (ufs, local, soft-updates, journaled soft-updates)"
echo "devfs on /dev (devfs)"
for dir in ${FREEBSD_TMPFS:-}; do echo "tmpfs on $dir (tmpfs, local)"; done
""",
    # bin/df/df.c: a tmpfs named in FREEBSD_TMPFS is its own mount point, as mounted.
    "df": """#!/bin/sh
for dir in ${FREEBSD_TMPFS:-}; do
    for arg in "$@"; do
        if [ "$arg" = "$dir" ]; then
            echo "Filesystem 1024-blocks Used Avail Capacity Mounted on"
            echo "tmpfs 524288 0 524288 0% $dir"
            exit 0
        fi
    done
done
exec /usr/bin/df "$@"
""",
    "dmesg": """#!/bin/sh
echo "FreeBSD 14.3-RELEASE releng/14.3-n271432-8c9ce319fef7 GENERIC amd64"
echo "vtnet0: Ethernet address: 58:9c:fc:00:00:2a"
if [ -n "${FREEBSD_DMESG:-}" ]; then cat "$FREEBSD_DMESG"; fi
""",
    "uname": """#!/bin/sh
echo "FreeBSD guest 14.3-RELEASE FreeBSD 14.3-RELEASE releng/14.3-n271432 GENERIC amd64"
""",
    # usr.sbin/pw: usershow fails for an unknown user; the rest is recorded.
    "pw": """#!/bin/sh
""" + _LOG + """case "$1 $2" in
"usershow -n")
    [ -f "$BHYVE_SNAPTEST_FAKE_ROOT/users/$3" ] && cat "$BHYVE_SNAPTEST_FAKE_ROOT/users/$3"
    ;;
"useradd -n")
    mkdir -p "$BHYVE_SNAPTEST_FAKE_ROOT/users" "$BHYVE_SNAPTEST_FAKE_ROOT/home/$3"
    echo "$3:*:1001:1001::0:0:bhyve-snaptest:/home/$3:/bin/sh" \\
        > "$BHYVE_SNAPTEST_FAKE_ROOT/users/$3"
    ;;
esac
""",
    # sbin/ifconfig: -l ether lists Ethernet interfaces; "IF ether" prints the address.
    "ifconfig": """#!/bin/sh
""" + _LOG + """case "$*" in
"-l ether") echo "vtnet0" ;;
"vtnet0 ether") printf 'vtnet0: flags=1008843<UP,BROADCAST> mtu 1500\\n\\tether %s\\n' \\
                       "${FREEBSD_MAC:-58:9c:fc:00:00:2a}" ;;
esac
""",
    "service": "#!/bin/sh\n" + _LOG + '[ "$2" != status ] || [ -n "${FREEBSD_SSHD_RUNNING:-}" ]\n',
    "hostname": "#!/bin/sh\n" + _LOG,
    "chown": "#!/bin/sh\n" + _LOG,
    "swapoff": "#!/bin/sh\n" + _LOG,
}


def userland(directory: Path) -> str:
    """Build the FreeBSD-like tools in ``directory``; returns the PATH that holds them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SAME_TOOLS:
        found = shutil.which(name)
        if found is not None and not (directory / name).exists():
            (directory / name).symlink_to(found)
    for name, text in STANDINS.items():
        (directory / name).unlink(missing_ok=True)
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return str(directory)


class FreeBSDShell(GuestShell):
    """A GuestShell whose commands run on the host under the FreeBSD-like userland.

    It records each command with the harness function that sent it (file and name), so a
    test can tell which of the harness's guest call sites it has run. Paths the harness
    hard-codes and only root could create on the host (``/firstboot``, ``/var/db/``,
    ``/etc/ssh/``) are moved under ``root``; ``/proc/`` goes to a path that does not exist.
    """

    MOVED = ("/firstboot", "/var/db/", "/etc/ssh/")

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.path = userland(root / "bin")
        self.env = {"PATH": self.path, "HOME": str(root), **(env or {})}
        self.sent: list[tuple[str, str, str]] = []
        self._client = None
        self._connected_once = True

    def _rewrite(self, command: str) -> str:
        for path in self.MOVED:
            command = command.replace(path, f"{self.root}{path}")
        return command.replace("/proc/", f"{self.root}/no-proc-on-freebsd/")

    def run(self, command: str, *, timeout: float = 60.0, stdin: bytes | None = None,
            idempotent: bool = False) -> CommandResult:
        self.sent.append((*_harness_caller(), command))
        start = time.monotonic()
        done = subprocess.run(["sh", "-c", self._rewrite(command)], input=stdin or b"",
                              capture_output=True, env=self.env, cwd=self.root,
                              timeout=timeout, check=False)
        return CommandResult(command, done.returncode, done.stdout.decode(errors="replace"),
                             done.stderr.decode(errors="replace"), time.monotonic() - start)


def _harness_caller() -> tuple[str, str]:
    """(path relative to the project, function) of the harness code that sent a command."""
    project = Path(__file__).resolve().parents[2]
    for frame in inspect.stack()[2:]:
        path = Path(frame.filename).resolve()
        if path.is_relative_to(project / "fixtures" / "bhyve_snaptest") and path.name != "guest.py":
            return str(path.relative_to(project)), frame.function
    return "", ""


def run_script(script: Path, env: dict[str, str], *args: str,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a guest script under the userland that ``env["PATH"]`` names."""
    return subprocess.run(["sh", str(script), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
