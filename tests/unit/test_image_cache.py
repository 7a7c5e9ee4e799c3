"""The image cache shared between jobs: BHYVE_SNAPTEST_CACHE chooses it, a build of one
digest runs once however many jobs ask at the same time, and a published image is read-only.

The concurrent builds are two real processes building the FreeBSD image from a loopback
mirror (a small fake disk), so the locks are exercised across processes as CI jobs use them.
"""

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from bhyve_snaptest import REPO_ROOT, cli, images, options
from bhyve_snaptest.errors import ImageError
from bhyve_snaptest.images import common, freebsd, linux
from bhyve_snaptest.locks import try_lock
from tests.unit.freebsd_mirror import RAW, publish_release, serve, wait_for

FULL = "14.3-RELEASE"
XZ_PATH = f"/releases/VM-IMAGES/{FULL}/amd64/Latest/FreeBSD-{FULL}-amd64-BASIC-CLOUDINIT-ufs.raw.xz"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    publish_release(root, FULL)
    with serve(root) as served:
        monkeypatch.setenv(freebsd.MIRROR_ENV, served.url)
        yield served


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """BHYVE_SNAPTEST_CACHE pointing at a fresh directory."""
    directory = tmp_path / "shared-cache"
    monkeypatch.setenv(common.CACHE_ENV, str(directory))
    return directory


def _leftovers(directory):
    return sorted(p.name for p in directory.rglob("*")
                  if p.name.startswith((".build-", ".lock-", ".old-", ".adopt-"))
                  or p.name.endswith(".part"))


# --- where the cache is ----------------------------------------------------------------------


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(common.CACHE_ENV, raising=False)
    assert images.cache_root() == REPO_ROOT / "images" / "cache"
    monkeypatch.setenv(common.CACHE_ENV, "  ")
    assert images.cache_root() == REPO_ROOT / "images" / "cache"
    monkeypatch.setenv(common.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert images.cache_root() == tmp_path / "elsewhere"


def test_image_build_goes_to_the_environment_cache_and_is_found_there(mirror, shared,
                                                                       capsys):
    assert cli.main(["image", "build", "freebsd", "--quiet"]) == 0
    built = capsys.readouterr().out.strip()
    assert built.startswith(f"{shared}/freebsd-")
    assert images.find_image("freebsd", images.cache_root()) == shared / built.rsplit("/")[-1]
    assert (shared / "freebsd").resolve() == shared / built.rsplit("/")[-1]


def test_cache_dir_option_overrides_the_environment(mirror, shared, tmp_path, capsys):
    other = tmp_path / "other"
    assert cli.main(["image", "build", "freebsd", "--quiet", "--cache-dir", str(other)]) == 0
    assert capsys.readouterr().out.startswith(f"{other}/freebsd-")
    assert not shared.exists()


def test_scenarios_look_for_their_image_in_the_environment_cache(shared):
    assert options.default_image("qemu") == shared / "linux"  # not built: the placeholder
    image = shared / "linux-0123456789abcdef"
    image.mkdir(parents=True)
    for name in linux.IMAGE_FILES:
        (image / name).write_text("x")
    (shared / "linux").symlink_to(image.name)
    assert options.default_image("qemu") == image


# --- one build per digest --------------------------------------------------------------------

CHILD = """
import json, sys
from bhyve_snaptest.images import build_image, cache_root
image = build_image("freebsd", cache_root(), progress=False)
print(json.dumps({"image": str(image), "key": (image / "id_ed25519.pub").read_text()}))
"""


def test_two_processes_building_one_image_build_it_once(mirror, shared):
    mirror.release_downloads.clear()  # hold the download until both builds are under way
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=REPO_ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    wait_for(lambda: mirror.count("CHECKSUM.SHA256") == 2)
    time.sleep(0.3)  # the second build reaches the lock the first one holds
    mirror.release_downloads.set()
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))

    assert mirror.count(".raw.xz") == 1, "one download: the second build waited and found it"
    assert results[0] == results[1], "same directory and the same key: built once"
    image = shared / results[0]["image"].rsplit("/")[-1]
    manifest = json.loads((image / "manifest.json").read_text())
    served = (mirror.root / XZ_PATH.lstrip("/")).read_bytes()
    assert manifest["source_sha256"] == hashlib.sha256(served).hexdigest()
    download = shared / "downloads" / f"{manifest['source_sha256']}.xz"
    assert common.sha256_file(download) == manifest["source_sha256"]
    with (image / "disk.img").open("rb") as disk:
        assert disk.read(len(RAW)) == RAW
        assert not disk.read(1 << 20).strip(b"\0"), "nothing but the enlargement after it"
    assert (image / "disk.img").stat().st_size == freebsd.FREEBSD_DISK_BYTES
    assert sorted(p.name for p in image.iterdir()) == ["disk.img", "id_ed25519",
                                                       "id_ed25519.pub", "manifest.json"]
    assert _leftovers(shared) == []


def test_a_held_build_lock_times_out_naming_the_lock(tmp_path):
    holder = try_lock(tmp_path / ".lock-linux-0123")
    try:
        started = time.monotonic()
        with pytest.raises(ImageError) as caught, \
                common.exclusive(tmp_path, "linux-0123", "building linux-0123", timeout=1):
            pass
        assert time.monotonic() - started >= 1
    finally:
        holder.release()
    message = str(caught.value)
    assert "building linux-0123 for over 1 s" in message
    assert str(tmp_path / ".lock-linux-0123") in message and "fuser" in message


def test_a_waiting_build_goes_on_once_the_lock_is_free(tmp_path):
    holder = try_lock(tmp_path / ".lock-x")
    threading.Timer(0.3, holder.release).start()
    started = time.monotonic()
    with common.exclusive(tmp_path, "x", "building x", timeout=30):
        waited = time.monotonic() - started
        assert (tmp_path / ".lock-x").exists()
    assert waited >= 0.25
    assert not (tmp_path / ".lock-x").exists(), "the holder removes its lock file"


# --- read-only images ------------------------------------------------------------------------


def test_published_images_are_read_only_and_force_still_replaces_them(mirror, shared):
    first = freebsd.build_freebsd_image(shared, progress=False)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [first, *first.iterdir()]}
    assert modes == {first.name: 0o555, "disk.img": 0o444, "id_ed25519": 0o400,
                     "id_ed25519.pub": 0o444, "manifest.json": 0o444}
    old_key = (first / "id_ed25519.pub").read_text()
    again = freebsd.build_freebsd_image(shared, progress=False, force=True)
    assert again == first and (again / "id_ed25519.pub").read_text() != old_key
    assert stat.S_IMODE(again.stat().st_mode) == 0o555
    assert _leftovers(shared) == []


def test_remove_tree_removes_a_read_only_tree(tmp_path):
    tree = tmp_path / "image"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("x")
    common.make_read_only(tree)
    assert stat.S_IMODE((tree / "sub").stat().st_mode) == 0o555
    assert stat.S_IMODE((tree / "sub" / "file").stat().st_mode) == 0o444
    common.remove_tree(tree)
    assert not tree.exists()
