"""The FreeBSD image builder against a loopback stand-in for download.freebsd.org.

What matters: the image directory is what drivers read, a rebuild with nothing changed needs
no network, a download is verified against CHECKSUM.SHA256 and kept by content, and every
failure names what failed (URL, both sums) and what to do about it.
"""

import hashlib
import json
import lzma
import os
import socket
import stat
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fixtures import images
from fixtures.config import GuestImage
from fixtures.errors import ConfigError, ImageError
from fixtures.images import freebsd

RELEASE = "14.3"
NAME = "FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz"
LATEST = "releases/VM-IMAGES/14.3-RELEASE/amd64/Latest"
#: A stand-in raw disk: data, a run of zeros (a hole in disk.img), data, trailing zeros.
RAW = (b"FAKE FreeBSD raw disk\n" + bytes(range(256)) * 16 + bytes(192 * 1024)
       + b"tail" * 1024 + bytes(64 * 1024))
MANIFEST_KEYS = {"name", "release", "source_url", "source_sha256", "digest", "built_at",
                 "disk", "ssh_user", "ssh_key", "ready_pattern", "guest_dir", "boot"}


def _checksum_line(name, data):
    return f"SHA256 ({name}) = {hashlib.sha256(data).hexdigest()}\n"


@dataclass
class Mirror:
    """The loopback server's files and the paths it was asked for."""

    url: str
    latest: Path
    xz_sha256: str
    requests: list

    def image_url(self, release=RELEASE):
        return f"{self.url}/releases/VM-IMAGES/{release}-RELEASE/amd64/Latest/" \
               f"FreeBSD-{release}-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz"

    def write_checksums(self, text):
        (self.latest / "CHECKSUM.SHA256").write_text(text)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    latest = root / LATEST
    latest.mkdir(parents=True)
    xz = lzma.compress(RAW, format=lzma.FORMAT_XZ)
    (latest / NAME).write_bytes(xz)
    (latest / "CHECKSUM.SHA256").write_text(
        _checksum_line(NAME.replace("ufs.raw", "ufs.qcow2"), b"qcow2") + _checksum_line(NAME, xz))
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(freebsd.MIRROR_ENV, url)
    yield Mirror(url, latest, hashlib.sha256(xz).hexdigest(), requests)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _build(cache, **kwargs):
    return freebsd.build_freebsd_image(cache, progress=False, **kwargs)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- building --------------------------------------------------------------------------------


def test_build_lays_out_the_image_directory(mirror, cache):
    image = _build(cache)
    digest = freebsd.image_digest(RELEASE, mirror.xz_sha256)
    assert image == cache.absolute() / f"freebsd-{RELEASE}-{digest}"
    assert sorted(p.name for p in image.iterdir()) == ["disk.img", "id_ed25519",
                                                       "id_ed25519.pub", "manifest.json"]
    manifest = json.loads((image / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert manifest | {"built_at": None} == {
        "name": "freebsd", "release": "14.3", "source_url": mirror.image_url(),
        "source_sha256": mirror.xz_sha256, "digest": digest, "built_at": None,
        "disk": "disk.img", "ssh_user": "freebsd", "ssh_key": "id_ed25519",
        "ready_pattern": None, "guest_dir": "/home/freebsd/snaptest", "boot": "uefi-disk"}
    assert manifest["built_at"].endswith("+00:00")
    assert (image / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert (cache / "freebsd").is_symlink() and (cache / "freebsd").resolve() == image
    assert freebsd.find_freebsd_image(cache) == image


def test_disk_is_the_raw_image_enlarged_sparsely(mirror, cache):
    disk = _build(cache) / "disk.img"
    assert disk.stat().st_size == freebsd.FREEBSD_DISK_BYTES
    with disk.open("rb") as f:
        assert f.read(len(RAW)) == RAW
        f.seek(-4096, os.SEEK_END)
        assert f.read() == bytes(4096)
    # the zero runs and the enlargement are holes, not written blocks
    assert disk.stat().st_blocks * 512 < 1024 * 1024


def test_files_are_read_only(mirror, cache):
    image = _build(cache)
    assert _mode(image) == 0o555
    assert _mode(image / "disk.img") == 0o444
    assert _mode(image / "id_ed25519") == 0o400
    assert _mode(image / "id_ed25519.pub") == 0o444
    assert _mode(image / "manifest.json") == 0o444
    download = cache / "downloads" / f"{mirror.xz_sha256}.xz"
    assert _mode(download) == 0o444
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [download.name]


def test_requests_go_to_the_documented_urls(mirror, cache):
    _build(cache)
    assert mirror.requests == [f"/{LATEST}/CHECKSUM.SHA256", f"/{LATEST}/{NAME}"]


def test_rebuild_with_nothing_changed_makes_no_request(mirror, cache, monkeypatch):
    first = _build(cache)
    count = len(mirror.requests)
    monkeypatch.setenv(freebsd.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    assert _build(cache) == first
    assert len(mirror.requests) == count


def test_forced_rebuild_reuses_the_verified_download(mirror, cache):
    first = _build(cache)
    old_key = (first / "id_ed25519.pub").read_text()
    again = _build(cache, force=True)
    assert again == first
    assert _mode(again) == 0o555, "the rebuilt directory is read-only too"
    assert mirror.requests[2:] == [f"/{LATEST}/CHECKSUM.SHA256"]
    assert (again / "id_ed25519.pub").read_text() != old_key
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_changed_builder_inputs_give_a_new_directory_without_downloading(mirror, cache,
                                                                         monkeypatch):
    first = _build(cache)
    monkeypatch.setattr(freebsd, "FREEBSD_DISK_BYTES", 2 * freebsd.GiB)
    second = _build(cache)
    assert second != first and first.is_dir()
    assert (second / "disk.img").stat().st_size == 2 * freebsd.GiB
    assert mirror.requests[2:] == [f"/{LATEST}/CHECKSUM.SHA256"]
    assert freebsd.find_freebsd_image(cache) == second


def test_damaged_cached_download_is_fetched_again(mirror, cache):
    _build(cache)
    download = cache / "downloads" / f"{mirror.xz_sha256}.xz"
    download.chmod(0o644)
    download.write_bytes(b"damaged")
    _build(cache, force=True)
    assert mirror.requests[2:] == [f"/{LATEST}/CHECKSUM.SHA256", f"/{LATEST}/{NAME}"]
    assert hashlib.sha256(download.read_bytes()).hexdigest() == mirror.xz_sha256


def test_progress_in_a_log_is_plain_lines(mirror, cache, capsys):
    """Under pytest stderr is no terminal, as in CI: whole lines, no carriage returns."""
    assert freebsd.build_freebsd_image(cache, progress=True).is_dir()
    captured = capsys.readouterr()
    assert captured.out == "", "progress and log lines stay off stdout"
    lines = captured.err.splitlines()
    assert "\r" not in captured.err
    assert lines[0] == f"FreeBSD {RELEASE}: {mirror.image_url()}"
    assert any(line.startswith(f"download {NAME}: 100% (") for line in lines)
    assert any(line.startswith(f"decompress {mirror.xz_sha256}.xz: 100% (") for line in lines)


# --- failures --------------------------------------------------------------------------------


def test_wrong_checksum_names_both_sums_and_leaves_nothing(mirror, cache):
    wrong = hashlib.sha256(b"something else").hexdigest()
    mirror.write_checksums(f"SHA256 ({NAME}) = {wrong}\n")
    with pytest.raises(ImageError) as caught:
        _build(cache)
    assert wrong in str(caught.value) and mirror.xz_sha256 in str(caught.value)
    assert mirror.image_url() in str(caught.value)
    assert list((cache / "downloads").iterdir()) == []
    assert sorted(p.name for p in cache.iterdir()) == ["downloads"]


def test_missing_release_names_the_checksum_url(mirror, cache):
    with pytest.raises(ImageError) as caught:
        _build(cache, release="13.9")
    message = str(caught.value)
    assert f"{mirror.url}/releases/VM-IMAGES/13.9-RELEASE/amd64/Latest/CHECKSUM.SHA256" in message
    assert "404" in message and freebsd.MIRROR_ENV in message and "--image PATH" in message


def test_missing_image_file_names_its_url_and_leaves_no_partial_file(mirror, cache):
    (mirror.latest / NAME).unlink()
    with pytest.raises(ImageError, match="404") as caught:
        _build(cache)
    assert mirror.image_url() in str(caught.value)
    assert list((cache / "downloads").iterdir()) == []


def test_unreachable_server_says_how_to_do_without_it(cache, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(freebsd.MIRROR_ENV, url)
    with pytest.raises(ImageError) as caught:
        _build(cache)
    message = str(caught.value)
    assert url in message and freebsd.MIRROR_ENV in message and "--image PATH" in message


def test_checksum_file_without_the_image(mirror, cache):
    mirror.write_checksums(_checksum_line("FreeBSD-14.3-RELEASE-amd64-ufs.raw.xz", b"x"))
    with pytest.raises(ImageError, match=f"lists no {NAME}"):
        _build(cache)


def test_corrupt_xz_is_an_image_error(mirror, cache):
    data = b"\xfd7zXZ\x00 not really xz"
    (mirror.latest / NAME).write_bytes(data)
    mirror.write_checksums(_checksum_line(NAME, data))
    with pytest.raises(ImageError, match="not a valid xz file"):
        _build(cache)
    assert not (cache / "freebsd").exists()


@pytest.mark.parametrize("release", ["14", "14.3-RELEASE", "14.3.1", "x.y", "", "../14.3"])
def test_bad_release_is_a_config_error(cache, release):
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR"):
        _build(cache, release=release)


def test_bad_mirror_url_is_a_config_error(cache, monkeypatch):
    monkeypatch.setenv(freebsd.MIRROR_ENV, "ftp.example.org/pub/FreeBSD")
    with pytest.raises(ConfigError, match=freebsd.MIRROR_ENV):
        _build(cache)


# --- checksums, digest, disk -----------------------------------------------------------------


SAMPLE = """\
SHA256 (FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2.xz) = \
1111111111111111111111111111111111111111111111111111111111111111
SHA256 (FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz) = \
ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789
SHA256 (FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-zfs.raw.xz) = \
2222222222222222222222222222222222222222222222222222222222222222
SHA256 (FreeBSD-14.3-RELEASE-amd64-ufs.vmdk.xz) = \
3333333333333333333333333333333333333333333333333333333333333333

# a comment, and a line in GNU format, both skipped
4444444444444444444444444444444444444444444444444444444444444444  FreeBSD-other.raw.xz
"""


def test_parse_checksums_reads_every_bsd_line():
    sums = freebsd.parse_checksums(SAMPLE)
    assert sums == {
        "FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2.xz": "1" * 64,
        "FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz":
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-zfs.raw.xz": "2" * 64,
        "FreeBSD-14.3-RELEASE-amd64-ufs.vmdk.xz": "3" * 64,
    }


@pytest.mark.parametrize("value", ["1234", "g" * 64, "1" * 65, ""])
def test_parse_checksums_rejects_a_malformed_sum(value):
    with pytest.raises(ImageError, match="malformed SHA-256"):
        freebsd.parse_checksums(f"SHA256 ({NAME}) = {value}\n")


def test_digest_follows_every_input():
    base = freebsd.image_digest(RELEASE, "a" * 64)
    assert len(base) == freebsd.DIGEST_LENGTH and base == freebsd.image_digest(RELEASE, "a" * 64)
    assert freebsd.image_digest("14.2", "a" * 64) != base
    assert freebsd.image_digest(RELEASE, "b" * 64) != base
    assert freebsd.image_digest(RELEASE, "a" * 64, source=b"changed builder") != base
    assert freebsd.image_digest(RELEASE, "a" * 64, disk_bytes=freebsd.GiB) != base


def test_enlarge_never_shrinks(tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(b"x" * 4096)
    freebsd.enlarge(raw, 1024)
    assert raw.read_bytes() == b"x" * 4096
    freebsd.enlarge(raw, 8192)
    assert raw.read_bytes() == b"x" * 4096 + bytes(4096)


def test_find_without_a_build_is_none(cache):
    assert freebsd.find_freebsd_image(cache) is None


def test_find_ignores_an_incomplete_build(mirror, cache):
    image = _build(cache)
    (image / "manifest.json").unlink()
    assert freebsd.find_freebsd_image(cache) is None


# --- a user's own disk -----------------------------------------------------------------------


@pytest.fixture
def user_disk(tmp_path):
    disk = tmp_path / "my-freebsd.raw"
    disk.write_bytes(b"\0" * 512 + b"EFI PART" + bytes(1016))
    return disk


def test_adopted_disk_gets_an_image_directory_of_its_own(cache, user_disk):
    image = freebsd.adopt_user_image(user_disk, cache)
    assert image.name.startswith("freebsd-user-")
    manifest = json.loads((image / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["release"] == "user" and manifest["disk"] == str(user_disk.resolve())
    assert manifest["source_url"] == user_disk.resolve().as_uri()
    assert manifest["boot"] == "uefi-disk" and manifest["ssh_user"] == "freebsd"
    assert sorted(p.name for p in image.iterdir()) == ["id_ed25519", "id_ed25519.pub",
                                                       "manifest.json"]
    # adopting again reuses the directory and its key; the release link is left alone
    assert freebsd.adopt_user_image(user_disk, cache) == image
    assert freebsd.find_freebsd_image(cache) is None


@pytest.mark.parametrize(("content", "message"), [
    (b"\xfd7zXZ\x00" + bytes(506), "unxz"),
    (b"QFI\xfb" + bytes(508), "qemu-img convert"),
    (b"x" * 100, "multiple of 512"),
])
def test_adopt_rejects_what_is_not_a_raw_disk(cache, tmp_path, content, message):
    disk = tmp_path / "disk"
    disk.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        freebsd.adopt_user_image(disk, cache)


def test_adopt_rejects_a_missing_disk(cache, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        freebsd.adopt_user_image(tmp_path / "nope.raw", cache)


def test_guest_image_loads_built_and_adopted_images(mirror, cache, user_disk):
    built = GuestImage.load(_build(cache))
    assert built.disk == built.directory / "disk.img"
    assert built.ssh_user == "freebsd" and built.ready_pattern is None
    assert built.ssh_key == built.directory / "id_ed25519"
    adopted = GuestImage.load(freebsd.adopt_user_image(user_disk, cache))
    assert adopted.disk == user_disk.resolve()


# --- the registry ----------------------------------------------------------------------------


def test_registry_builds_and_finds_freebsd(mirror, cache):
    assert "freebsd" in images.IMAGE_NAMES
    assert images.find_image("freebsd", cache) is None
    image = images.build_image("freebsd", cache, release=RELEASE, progress=False)
    assert images.find_image("freebsd", cache) == image


def test_registry_refuses_a_release_for_linux(cache):
    with pytest.raises(ConfigError, match="freebsd image only"):
        images.build_image("linux", cache, release=RELEASE)
