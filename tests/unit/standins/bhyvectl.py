"""A stand-in for bhyvectl(8): sends the request and exits, as upstream does.

It exits with a raw errno on failure (2, ENOENT, when the snapshot socket is missing) after
upstream's perror messages, and never waits for bhyve to finish the work.
"""

import errno
import json
import os
import socket
import sys
from pathlib import Path

from fixtures.bhyve.getopt import parse_bhyvectl_argv

VMM = Path(os.environ["STANDIN_VMM_DIR"])
RUN = Path(os.environ["STANDIN_RUN_DIR"])


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


def main() -> int:
    args = parse_bhyvectl_argv(sys.argv[1:])
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
            path = Path(str(args[action]))
            if not path.parent.is_dir():
                print(f"Failed to open checkpoint directory: {os.strerror(errno.ENOENT)}",
                      file=sys.stderr)
                return errno.ENOENT
            return send(name, {"cmd": "checkpoint", "filename": str(path),
                               "suspend": action == "suspend"})
    return 1


if __name__ == "__main__":
    sys.exit(main())
