"""A stand-in for download.freebsd.org: a temporary directory laid out as upstream's
release/Makefile.mirrors stages it (see fixtures/bhyve_snaptest/images/freebsd.py), served
over loopback HTTP with a log of the paths asked for; the same directory also serves as a
file:// mirror.

Paths are spelled out here, not computed by the code under test, so that a wrong URL in the
builder fails the tests instead of agreeing with itself.
"""

import contextlib
import hashlib
import lzma
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: A stand-in raw disk: data, a run of zeros (a hole in disk.img), data, trailing zeros.
RAW = (b"FAKE FreeBSD raw disk\n" + bytes(range(256)) * 16 + bytes(192 * 1024)
       + b"tail" * 1024 + bytes(64 * 1024))


def checksum_line(name: str, data: bytes) -> str:
    """One line of ``sha256 FILES`` output, as CHECKSUM.SHA256 holds it."""
    return f"SHA256 ({name}) = {hashlib.sha256(data).hexdigest()}\n"


def xz_of(raw: bytes) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_XZ)


def publish_release(root: Path, branch: str, raw: bytes = RAW) -> Path:
    """releases/VM-IMAGES/<branch>/amd64/Latest/ with the image and CHECKSUM.SHA256, beside
    the qcow2 and ZFS images upstream lists too; ``branch`` is REVISION-BRANCH, such as
    14.3-RELEASE or 15.0-RC1. The Latest directory."""
    latest = root / "releases" / "VM-IMAGES" / branch / "amd64" / "Latest"
    latest.mkdir(parents=True, exist_ok=True)
    name = f"FreeBSD-{branch}-amd64-BASIC-CLOUDINIT-ufs.raw.xz"
    xz = xz_of(raw)
    (latest / name).write_bytes(xz)
    (latest / "CHECKSUM.SHA256").write_text(
        checksum_line(name.replace("ufs.raw", "ufs.qcow2"), b"qcow2")
        + checksum_line(name, xz)
        + checksum_line(name.replace("-ufs.", "-zfs."), b"zfs"))
    return latest


def publish_snapshot(root: Path, branch: str, suffix: str, raw: bytes = RAW) -> str:
    """snapshots/VM-IMAGES/<branch>/amd64/: the build ``suffix`` (BUILDDATE-GITREV-GITCOUNT)
    in its dated directory with CHECKSUM.SHA256-<suffix> listing the suffixed names, and
    Latest/ remade with unsuffixed symbolic links to it. The image's path under ``root``."""
    vm_dir = root / "snapshots" / "VM-IMAGES" / branch / "amd64"
    dated = vm_dir / suffix[:8]
    dated.mkdir(parents=True, exist_ok=True)
    stem = f"FreeBSD-{branch}-amd64-BASIC-CLOUDINIT"
    name = f"{stem}-{suffix}-ufs.raw.xz"
    xz = xz_of(raw)
    (dated / name).write_bytes(xz)
    (dated / f"CHECKSUM.SHA256-{suffix}").write_text(
        checksum_line(f"{stem}-{suffix}-ufs.qcow2.xz", b"qcow2") + checksum_line(name, xz))
    latest = vm_dir / "Latest"
    shutil.rmtree(latest, ignore_errors=True)
    latest.mkdir()
    (latest / f"{stem}-ufs.raw.xz").symlink_to(f"../{suffix[:8]}/{name}")
    (latest / "CHECKSUM.SHA256").symlink_to(f"../{suffix[:8]}/CHECKSUM.SHA256-{suffix}")
    return str((dated / name).relative_to(root))


@dataclass
class Mirror:
    """The served directory, its URL and the paths it was asked for, in order."""

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)
    #: Set to hold back every .xz download until it is set (for concurrency tests).
    release_downloads: threading.Event = field(default_factory=threading.Event)

    def count(self, suffix: str) -> int:
        return sum(1 for path in self.requests if path.endswith(suffix))


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Mirror]:
    """Serve ``root`` over loopback HTTP for the block."""
    mirror = Mirror(root, "")
    mirror.release_downloads.set()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            mirror.requests.append(self.path)
            if self.path.endswith(".xz"):
                mirror.release_downloads.wait(timeout=60)
            super().do_GET()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield mirror
    finally:
        mirror.release_downloads.set()
        server.shutdown()
        server.server_close()
        thread.join()


def wait_for(condition, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
