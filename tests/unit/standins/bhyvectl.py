"""A stand-in for bhyvectl(8): sends the request and exits, as upstream does.

Not bhyvectl: it follows freebsd/freebsd-src usr.sbin/bhyvectl/bhyvectl.c on the outside,
for the personality in STANDIN_PERSONALITY (default ``main``):

* any option it does not know (``--help`` included) prints its usage and exits 1;
* it exits with a raw errno on failure (2, ENOENT, when the snapshot socket is missing)
  after upstream's perror messages, and never waits for bhyve to finish the work;
* the file of ``--suspend``/``--checkpoint``: ``13`` sends it as given (an nvlist string;
  bhyve opens it from its own working directory), and so does ``d34547``, a patch from
  before the change that follows; ``14`` and ``main`` send ``basename(file)`` and a
  descriptor of ``dirname(file)``, opened in bhyvectl's working directory (review D38858),
  which a missing directory fails ("Failed to open checkpoint directory").
"""

import errno
import json
import os
import socket
import sys
from pathlib import Path

from fixtures.bhyve.getopt import GetoptError, parse_bhyvectl_argv

VMM = Path(os.environ["STANDIN_VMM_DIR"])
RUN = Path(os.environ["STANDIN_RUN_DIR"])
PERSONALITY = os.environ.get("STANDIN_PERSONALITY", "main")
#: STANDIN_NO_SNAPSHOT=1: a bhyvectl built without BHYVE_SNAPSHOT (no --suspend).
SNAPSHOT = not os.environ.get("STANDIN_NO_SNAPSHOT")
USAGE = Path(__file__).parent.parent / "samples" / \
    f"bhyvectl-usage-main{'' if SNAPSHOT else '-nosnapshot'}.txt"


def usage() -> int:
    print("".join(line for line in USAGE.read_text().splitlines(keepends=True)
                  if not line.startswith("#")), file=sys.stderr, end="")
    return 1


def send(name: str, request: dict) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(RUN / name))
    except OSError as exc:
        print(f"connect() failed: {os.strerror(exc.errno)}", file=sys.stderr)
        return exc.errno
    sock.sendall(json.dumps(request).encode() + b"\n")
    sock.close()
    return 0


def checkpoint_request(file: str, suspend: bool) -> dict | int:
    """The request for FILE, or the errno bhyvectl exits with."""
    if PERSONALITY in ("13", "d34547"):
        return {"cmd": "checkpoint", "filename": file, "suspend": suspend}
    directory = os.path.dirname(file) or "."
    if not os.path.isdir(directory):  # open(dirname(file), O_DIRECTORY) failed
        print(f"Failed to open checkpoint directory: {os.strerror(errno.ENOENT)}",
              file=sys.stderr)
        return errno.ENOENT
    return {"cmd": "checkpoint", "filename": os.path.basename(file),
            "dir": os.path.abspath(directory), "suspend": suspend}


def main() -> int:
    try:
        args = parse_bhyvectl_argv(sys.argv[1:], snapshot=SNAPSHOT)
    except GetoptError as exc:
        print(f"bhyvectl: {exc.args[0].splitlines()[0]}", file=sys.stderr)
        return usage()
    name = args["vm"]
    if not (VMM / name).exists():
        print(f"vm_open: {name} could not be opened: No such file or directory",
              file=sys.stderr)
        return 1
    if args.get("destroy"):
        (VMM / name).unlink()
        return 0
    if args.get("force-poweroff"):
        return send(name, {"cmd": "poweroff"})
    for action in ("suspend", "checkpoint"):
        if action in args:
            request = checkpoint_request(str(args[action]), action == "suspend")
            return request if isinstance(request, int) else send(name, request)
    return 1


if __name__ == "__main__":
    sys.exit(main())
