"""The FreeBSD image builder against a loopback stand-in for download.freebsd.org.

What matters: the image directory is what drivers read, a rebuild with nothing changed needs
no network, a download is verified against CHECKSUM.SHA256 and kept by content, and every
failure names what failed (URL, both sums) and what to do about it.
"""

import hashlib
import json
import os
import socket
import stat
from dataclasses import dataclass

import pytest

from bhyve_snaptest import images
from bhyve_snaptest.config import GuestImage
from bhyve_snaptest.errors import ConfigError, ImageError
from bhyve_snaptest.images import freebsd
from tests.unit.freebsd_mirror import RAW, checksum_line, publish_release, publish_snapshot, serve

RELEASE = "14.3"
FULL = "14.3-RELEASE"
NAME = "FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.raw.xz"
LATEST = "releases/VM-IMAGES/14.3-RELEASE/amd64/Latest"
MANIFEST_KEYS = {"name", "release", "source_url", "source_sha256", "digest", "built_at",
                 "disk", "ssh_user", "ssh_key", "ready_pattern", "guest_dir", "boot"}


@dataclass
class Mirror:
    """The loopback server's files and the paths it was asked for."""

    url: str
    root: object
    latest: object
    xz_sha256: str
    requests: list

    def image_url(self, release=FULL):
        return f"{self.url}/releases/VM-IMAGES/{release}/amd64/Latest/" \
               f"FreeBSD-{release}-amd64-BASIC-CLOUDINIT-ufs.raw.xz"

    def write_checksums(self, text):
        (self.latest / "CHECKSUM.SHA256").write_text(text)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    latest = publish_release(root, FULL)
    with serve(root) as served:
        monkeypatch.setenv(freebsd.MIRROR_ENV, served.url)
        yield Mirror(served.url, root, latest,
                     hashlib.sha256((latest / NAME).read_bytes()).hexdigest(), served.requests)


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
    digest = freebsd.image_digest(FULL, mirror.xz_sha256)
    assert image == cache.absolute() / f"freebsd-{FULL}-{digest}"
    assert sorted(p.name for p in image.iterdir()) == ["disk.img", "id_ed25519",
                                                       "id_ed25519.pub", "manifest.json"]
    manifest = json.loads((image / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS
    assert manifest | {"built_at": None} == {
        "name": "freebsd", "release": FULL, "source_url": mirror.image_url(),
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
    assert lines[0] == f"FreeBSD {FULL}: {mirror.image_url()}"
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
    mirror.write_checksums(checksum_line("FreeBSD-14.3-RELEASE-amd64-ufs.raw.xz", b"x"))
    with pytest.raises(ImageError, match=f"lists no {NAME}"):
        _build(cache)


def test_corrupt_xz_is_an_image_error(mirror, cache):
    data = b"\xfd7zXZ\x00 not really xz"
    (mirror.latest / NAME).write_bytes(data)
    mirror.write_checksums(checksum_line(NAME, data))
    with pytest.raises(ImageError, match="not a valid xz file"):
        _build(cache)
    assert not (cache / "freebsd").exists()


@pytest.mark.parametrize("release", ["14", "14.3.1", "x.y", "", "../14.3", "14.3-release",
                                     "15.0-RC", "15.0-BETA", "15.0-CURRENT-20250605",
                                     "15.0-CURRENT-2025060-abc-1", "15.0-RC1/../x"])
def test_bad_release_is_a_config_error(cache, release):
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR.*-RCn.*-CURRENT"):
        _build(cache, release=release)


def test_a_build_suffix_on_a_release_is_refused(cache):
    with pytest.raises(ConfigError, match=r"only snapshots .* use 15\.0-RC1"):
        _build(cache, release="15.0-RC1-20250605-0123abc-277890")


def test_bad_mirror_url_is_a_config_error(cache, monkeypatch):
    monkeypatch.setenv(freebsd.MIRROR_ENV, "ftp.example.org/pub/FreeBSD")
    with pytest.raises(ConfigError, match=freebsd.MIRROR_ENV):
        _build(cache)


# --- releases, pre-releases and snapshots ----------------------------------------------------
#
# Layouts as release/Makefile.mirrors stages them (see freebsd.py and freebsd_mirror.py).

SUFFIX = "20250605-0123abcdef-277890"
NEWER = "20250612-fedcba9876-277999"
SNAP = "snapshots/VM-IMAGES/15.0-CURRENT/amd64"


@pytest.mark.parametrize(("given", "name", "snapshot", "moves"), [
    ("14.3", "14.3-RELEASE", False, False),
    ("14.3-RELEASE", "14.3-RELEASE", False, False),
    ("15.0-BETA2", "15.0-BETA2", False, False),
    ("15.0-RC1", "15.0-RC1", False, False),
    ("15.0-ALPHA3", "15.0-ALPHA3", True, True),
    ("15.0-CURRENT", "15.0-CURRENT", True, True),
    ("14.3-STABLE", "14.3-STABLE", True, True),
    ("14.3-PRERELEASE", "14.3-PRERELEASE", True, True),
    (f"15.0-CURRENT-{SUFFIX}", f"15.0-CURRENT-{SUFFIX}", True, False),
])
def test_release_names(given, name, snapshot, moves):
    release = freebsd.check_release(given)
    assert (release.name, release.snapshot, release.moves) == (name, snapshot, moves)


def test_default_release_is_the_release_of_default():
    assert freebsd.check_release(None).name == f"{freebsd.DEFAULT_RELEASE}-RELEASE"


@pytest.mark.parametrize("branch", ["15.0-BETA2", "15.0-RC1"])
def test_prerelease_comes_from_releases_latest(mirror, cache, branch):
    publish_release(mirror.root, branch)
    image = _build(cache, release=branch)
    latest = f"/releases/VM-IMAGES/{branch}/amd64/Latest"
    assert mirror.requests == [f"{latest}/CHECKSUM.SHA256",
                               f"{latest}/FreeBSD-{branch}-amd64-BASIC-CLOUDINIT-ufs.raw.xz"]
    assert image.name.startswith(f"freebsd-{branch}-")
    manifest = json.loads((image / "manifest.json").read_text())
    assert manifest["release"] == branch and manifest["source_url"] == mirror.image_url(branch)


def test_prereleases_are_kept_apart_and_share_a_download(mirror, cache):
    publish_release(mirror.root, "15.0-BETA2")
    publish_release(mirror.root, "15.0-RC1")  # the same bytes: one download serves both
    beta = _build(cache, release="15.0-BETA2")
    rc = _build(cache, release="15.0-RC1")
    assert beta != rc and freebsd.is_complete(beta) and freebsd.is_complete(rc)
    assert sum(path.endswith(".raw.xz") for path in mirror.requests) == 1
    assert freebsd.find_freebsd_image(cache) == rc
    assert _build(cache, release="15.0-BETA2") == beta, "each finds its own build again"


@pytest.mark.parametrize("branch", ["15.0-CURRENT", "14.3-STABLE"])
def test_snapshot_comes_from_its_dated_directory(mirror, cache, branch):
    path = publish_snapshot(mirror.root, branch, SUFFIX)
    assert path == (f"snapshots/VM-IMAGES/{branch}/amd64/20250605/"
                    f"FreeBSD-{branch}-amd64-BASIC-CLOUDINIT-{SUFFIX}-ufs.raw.xz")
    image = _build(cache, release=branch)
    assert mirror.requests == [f"/snapshots/VM-IMAGES/{branch}/amd64/Latest/CHECKSUM.SHA256",
                               f"/{path}"]
    manifest = json.loads((image / "manifest.json").read_text())
    assert manifest["release"] == branch and manifest["source_url"] == f"{mirror.url}/{path}"
    with (image / "disk.img").open("rb") as disk:
        assert disk.read(len(RAW)) == RAW


def test_a_snapshot_build_asks_latest_each_time(mirror, cache):
    publish_snapshot(mirror.root, "15.0-CURRENT", SUFFIX)
    first = _build(cache, release="15.0-CURRENT")
    assert _build(cache, release="15.0-CURRENT") == first
    assert mirror.requests[2:] == [f"/{SNAP}/Latest/CHECKSUM.SHA256"], "no new download"
    newer = publish_snapshot(mirror.root, "15.0-CURRENT", NEWER, raw=RAW + b"newer".ljust(512))
    second = _build(cache, release="15.0-CURRENT")
    assert second != first and freebsd.is_complete(first)
    assert mirror.requests[3:] == [f"/{SNAP}/Latest/CHECKSUM.SHA256", f"/{newer}"]
    assert freebsd.find_freebsd_image(cache) == second


def test_a_named_snapshot_build_is_fixed(mirror, cache, monkeypatch):
    older = publish_snapshot(mirror.root, "15.0-CURRENT", SUFFIX)
    publish_snapshot(mirror.root, "15.0-CURRENT", NEWER, raw=RAW + b"newer".ljust(512))
    image = _build(cache, release=f"15.0-CURRENT-{SUFFIX}")
    assert mirror.requests == [f"/{SNAP}/20250605/CHECKSUM.SHA256-{SUFFIX}", f"/{older}"]
    assert image.name.startswith(f"freebsd-15.0-CURRENT-{SUFFIX}-")
    monkeypatch.setenv(freebsd.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    assert _build(cache, release=f"15.0-CURRENT-{SUFFIX}") == image, "found offline"


def test_a_named_snapshot_gone_from_the_mirror_says_so(mirror, cache):
    with pytest.raises(ImageError, match="404") as caught:
        _build(cache, release="15.0-CURRENT-20240101-abc123-270000")
    message = str(caught.value)
    assert f"{mirror.url}/{SNAP}/20240101/CHECKSUM.SHA256-20240101-abc123-270000" in message
    assert "few weeks" in message


@pytest.mark.parametrize("builds", [[], [SUFFIX, NEWER]])
def test_latest_must_list_one_snapshot_build(mirror, cache, builds):
    publish_snapshot(mirror.root, "15.0-CURRENT", SUFFIX)
    stem = "FreeBSD-15.0-CURRENT-amd64-BASIC-CLOUDINIT"
    (mirror.root / SNAP / "Latest" / "CHECKSUM.SHA256").write_text(
        "".join(checksum_line(f"{stem}-{b}-ufs.raw.xz", b.encode()) for b in builds)
        + checksum_line(f"{stem}-{SUFFIX}-ufs.qcow2.xz", b"qcow2"))
    with pytest.raises(ImageError, match=f"lists {len(builds) or 'no'} snapshot builds") as caught:
        _build(cache, release="15.0-CURRENT")
    assert all(b in str(caught.value) for b in builds)
    assert "--release 15.0-CURRENT-YYYYMMDD-GITREV-COUNT" in str(caught.value)


def test_a_file_url_mirror_serves_releases_and_snapshots(tmp_path, cache, monkeypatch):
    root = tmp_path / "mirror"
    publish_release(root, "15.0-RC1")
    publish_snapshot(root, "15.0-CURRENT", SUFFIX)
    monkeypatch.setenv(freebsd.MIRROR_ENV, root.as_uri())
    rc = _build(cache, release="15.0-RC1")
    current = _build(cache, release="15.0-CURRENT")
    assert rc != current and freebsd.is_complete(rc) and freebsd.is_complete(current)
    source = json.loads((current / "manifest.json").read_text())["source_url"]
    assert source == f"{root.as_uri()}/{SNAP}/20250605/" \
                     f"FreeBSD-15.0-CURRENT-amd64-BASIC-CLOUDINIT-{SUFFIX}-ufs.raw.xz"


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
