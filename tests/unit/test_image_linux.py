"""The Linux image builder, without a VM, apt or the network: small fake inputs only.

What matters: the cache key follows the inputs exactly, the manifest is what drivers read,
kernel modules load in dependency order, and the initramfs holds what the guest needs to boot
and accept an SSH login.
"""

import dataclasses
import gzip
import json
import shutil
import stat
import struct
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bhyve_snaptest import images
from bhyve_snaptest.commands import CommandResult
from bhyve_snaptest.errors import ConfigError, ImageError
from bhyve_snaptest.images import linux

VERSIONS = {"linux-image-6.1.0-99-amd64": "6.1.999-1", "busybox-static": "1:1.35.0-4",
            "libc6": "2.36-9"}


def _package(name, version, sha="0" * 64):
    return linux.DebPackage(name, version, "amd64", sha, 1000)


RESOLUTION = linux.Resolution(
    kernel=_package("linux-image-6.1.0-99-amd64", "6.1.999-1"),
    userland=(_package("busybox-static", "1:1.35.0-4"), _package("libc6", "2.36-9")),
)


@pytest.fixture
def recipe_dir(tmp_path):
    """A private copy of the real recipe, free to edit."""
    directory = tmp_path / "recipe"
    shutil.copytree(linux.RECIPE_DIR, directory)
    return directory


# --- the recipe and the cache key ------------------------------------------------------------


def test_real_recipe_loads_with_the_documented_defaults():
    recipe = linux.load_recipe()
    assert recipe.kernel_meta == "linux-image-amd64"
    # every disk and NIC model of config.py, and ext4 after the crc32c it softly depends on
    assert {"ahci", "sd_mod", "virtio_blk", "nvme", "virtio_pci", "virtio_net", "e1000",
            "ext4"} <= set(recipe.modules)
    assert recipe.modules.index("crc32c_generic") < recipe.modules.index("ext4")
    words = recipe.cmdline.split()
    assert "console=ttyS0,115200" in words
    assert "panic=0" in words and "oops=panic" in words
    assert not any(w.startswith("snaptest.") for w in words), "the config drive says those"
    assert {"sr_mod", "isofs"} <= set(recipe.modules), "to read the config drive"
    assert {"busybox-static", "dropbear-bin", "libc6"} <= set(recipe.packages)
    assert set(recipe.sources) == {"images/linux/recipe.toml", "images/linux/init.sh",
                                   "images/linux/inittab",
                                   "fixtures/bhyve_snaptest/images/linux.py",
                                   "fixtures/bhyve_snaptest/images/bootdisk.py"}


def test_digest_is_stable_for_unchanged_inputs(recipe_dir):
    first = linux.image_digest(linux.load_recipe(recipe_dir).sources, VERSIONS)
    again = linux.image_digest(linux.load_recipe(recipe_dir).sources,
                               dict(reversed(list(VERSIONS.items()))))
    assert first == again
    assert len(first) == linux.DIGEST_LENGTH and int(first, 16) >= 0


@pytest.mark.parametrize("name", ["recipe.toml", "init.sh", "inittab"])
def test_digest_changes_when_a_recipe_file_changes(recipe_dir, name):
    before = linux.image_digest(linux.load_recipe(recipe_dir).sources, VERSIONS)
    with (recipe_dir / name).open("a") as f:
        f.write("\n# edited\n")
    assert linux.image_digest(linux.load_recipe(recipe_dir).sources, VERSIONS) != before


def test_digest_changes_with_a_package_version_or_the_builder_source():
    sources = linux.load_recipe().sources
    before = linux.image_digest(sources, VERSIONS)
    assert linux.image_digest(sources, {**VERSIONS, "libc6": "2.36-10"}) != before
    module = "fixtures/bhyve_snaptest/images/linux.py"
    edited = {**sources, module: sources[module] + b"#"}
    assert linux.image_digest(edited, VERSIONS) != before


def test_digest_keeps_file_boundaries():
    # Moving bytes from one file to the next must not give the same key.
    assert linux.image_digest({"a": b"xy", "b": b""}, {}) != linux.image_digest(
        {"a": b"x", "b": b"y"}, {})


def test_bad_recipe_is_an_image_error(recipe_dir):
    text = (recipe_dir / "recipe.toml").read_text()
    (recipe_dir / "recipe.toml").write_text(text.replace("modules = [", "modules_x = ["))
    with pytest.raises(ImageError, match="modules"):
        linux.load_recipe(recipe_dir)
    (recipe_dir / "init.sh").unlink()
    with pytest.raises(ImageError, match=r"init\.sh"):
        linux.load_recipe(recipe_dir)


# --- apt output ------------------------------------------------------------------------------


APT_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-57-amd64
  Recommends: firmware-linux-free
"""

APT_SHOW = """Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
Description: Standalone rescue shell
 with tons of builtin utilities
SHA256: abc123
Size: 928188

Package: libc6
Version: 2.36-9+deb12u14
Architecture: amd64
SHA256: def456
Size: 2759320
"""


def test_kernel_package_comes_from_the_depends_line():
    assert linux.kernel_package_from_depends(APT_DEPENDS, "linux-image-amd64") == \
        "linux-image-6.1.0-57-amd64"


def test_ambiguous_or_missing_kernel_package_is_refused():
    two = APT_DEPENDS + "  Depends: linux-image-6.1.0-58-amd64\n"
    with pytest.raises(ImageError, match="cannot tell"):
        linux.kernel_package_from_depends(two, "linux-image-amd64")
    with pytest.raises(ImageError, match="none"):
        linux.kernel_package_from_depends("linux-image-amd64\n", "linux-image-amd64")


def test_apt_show_stanzas_become_exact_packages():
    packages = [linux.package_from_stanza(s) for s in linux.parse_apt_stanzas(APT_SHOW)]
    assert [(p.name, p.version, p.sha256, p.size) for p in packages] == [
        ("busybox-static", "1:1.35.0-4+deb12u1+b1", "abc123", 928188),
        ("libc6", "2.36-9+deb12u14", "def456", 2759320),
    ]
    # apt-get download escapes the epoch colon in the file name; the cache uses its name.
    assert packages[0].deb_name == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
    assert RESOLUTION.kernel_version == "6.1.0-99-amd64"


# --- kernel modules --------------------------------------------------------------------------


MODULES_DEP = """kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/scsi/sd_mod.ko: kernel/lib/crc-t10dif.ko kernel/drivers/scsi/scsi_mod.ko
kernel/lib/crc-t10dif.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko
kernel/lib/crc16.ko:
kernel/drivers/gpu/huge.ko:
"""  # noqa: E501


def test_module_closure_loads_dependencies_first_and_each_once():
    order = linux.module_closure(linux.parse_modules_dep(MODULES_DEP), ["ahci", "sd_mod"])
    names = [linux.module_name(p) for p in order]
    assert names == ["scsi_mod", "libata", "libahci", "ahci", "crc_t10dif", "sd_mod"]
    assert "huge" not in names


def test_module_closure_skips_builtins_and_refuses_unknown_modules():
    deps = linux.parse_modules_dep(MODULES_DEP)
    builtin = ["kernel/crypto/crc32c_generic.ko"]
    assert linux.module_closure(deps, ["crc32c_generic", "ext4"], builtin) == [
        "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko"]
    assert linux.loadable_modules(["crc32c_generic", "ext4"], builtin) == ["ext4"]
    with pytest.raises(ImageError, match="virtio_net"):
        linux.module_closure(deps, ["virtio_net"])


def test_module_names_follow_modprobe_spelling():
    assert linux.module_name("kernel/lib/crc-t10dif.ko") == "crc_t10dif"
    assert linux.module_name("kernel/fs/ext4/ext4.ko.xz") == "ext4"


def _fake_kernel_tree(root, kver):
    modules = root / "lib" / "modules" / kver
    for line in MODULES_DEP.splitlines():
        path = modules / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"module " + path.name.encode())
    (modules / "modules.order").write_text("")
    (modules / "modules.builtin").write_text("kernel/crypto/crc32c_generic.ko\n")
    return modules


def test_install_modules_copies_only_the_closure_and_indexes_it(tmp_path, monkeypatch):
    kver = "6.1.0-99-amd64"
    _fake_kernel_tree(tmp_path / "kernel", kver)
    depmod_roots = []

    def fake_run_host(argv, **_):
        assert argv[:2] == ["depmod", "-b"] and argv[3] == kver
        depmod_roots.append(Path(argv[2]))
        if len(depmod_roots) == 1:  # the whole kernel: depmod writes modules.dep
            (Path(argv[2]) / "lib/modules" / kver / "modules.dep").write_text(MODULES_DEP)
        return CommandResult(" ".join(argv), 0, "", "", 0.0)

    monkeypatch.setattr(linux, "run_host", fake_run_host)
    rootfs = tmp_path / "rootfs"
    load = linux.install_modules(tmp_path / "kernel", kver, ["ahci", "crc32c_generic"], rootfs)
    assert load == ["ahci"]
    assert depmod_roots == [tmp_path / "kernel", rootfs]
    copied = sorted(str(p.relative_to(rootfs / "lib/modules" / kver))
                    for p in (rootfs / "lib/modules" / kver).rglob("*.ko"))
    assert copied == ["kernel/drivers/ata/ahci.ko", "kernel/drivers/ata/libahci.ko",
                      "kernel/drivers/ata/libata.ko", "kernel/drivers/scsi/scsi_mod.ko"]


# --- ELF files and shared libraries ----------------------------------------------------------


def make_elf(needed=(), interpreter=None):
    """A minimal 64-bit ELF with PT_LOAD, PT_DYNAMIC and optionally PT_INTERP."""
    base, phnum = 0x400000, 3 if interpreter else 2
    interp = interpreter.encode() + b"\0" if interpreter else b""
    strtab = b"\0"
    name_offsets = []
    for name in needed:
        name_offsets.append(len(strtab))
        strtab += name.encode() + b"\0"
    interp_off = 64 + 56 * phnum
    strtab_off = interp_off + len(interp)
    dyn_off = strtab_off + len(strtab)
    dynamic = b"".join(struct.pack("<qQ", linux.DT_NEEDED, o) for o in name_offsets)
    dynamic += struct.pack("<qQ", linux.DT_STRTAB, base + strtab_off) + struct.pack("<qQ", 0, 0)
    size = dyn_off + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", linux.PT_LOAD, 5, 0, base, base, size, size, 0x1000)
    phdrs += struct.pack("<IIQQQQQQ", linux.PT_DYNAMIC, 6, dyn_off, base + dyn_off,
                         base + dyn_off, len(dynamic), len(dynamic), 8)
    if interpreter:
        phdrs += struct.pack("<IIQQQQQQ", linux.PT_INTERP, 4, interp_off, base + interp_off,
                             base + interp_off, len(interp), len(interp), 1)
    return header + phdrs + interp + strtab + dynamic


def _write(path, data, mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _fake_userland(root):
    """Unpacked packages: a program, a library behind a SONAME symlink, libc, the loader."""
    _write(root / "bin/busybox", b"static busybox stand-in")
    _write(root / "usr/sbin/dropbear",
           make_elf(["libtomcrypt.so.1", "libc.so.6"], "/lib64/ld-linux-x86-64.so.2"))
    _write(root / "usr/lib/x86_64-linux-gnu/libtomcrypt.so.1.0.1", make_elf(["libc.so.6"]))
    (root / "usr/lib/x86_64-linux-gnu/libtomcrypt.so.1").symlink_to("libtomcrypt.so.1.0.1")
    _write(root / "lib/x86_64-linux-gnu/libc.so.6", make_elf(["ld-linux-x86-64.so.2"]))
    _write(root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", make_elf())
    (root / "lib64").mkdir()
    # Debian's loader link is absolute: it must resolve inside the unpack root, not on the host.
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return root


def test_read_elf_links_finds_interpreter_and_needed(tmp_path):
    path = tmp_path / "prog"
    path.write_bytes(make_elf(["liba.so.1", "libc.so.6"], "/lib64/ld-linux-x86-64.so.2"))
    links = linux.read_elf_links(path)
    assert links == linux.ElfLinks("/lib64/ld-linux-x86-64.so.2", ("liba.so.1", "libc.so.6"))
    path.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(ImageError, match="not a 64-bit"):
        linux.read_elf_links(path)


def test_library_closure_follows_needed_transitively(tmp_path):
    root = _fake_userland(tmp_path / "userland")
    closure = linux.library_closure([root / "usr/sbin/dropbear"], root)
    assert closure == {
        "libtomcrypt.so.1": root / "usr/lib/x86_64-linux-gnu/libtomcrypt.so.1.0.1",
        "libc.so.6": root / "lib/x86_64-linux-gnu/libc.so.6",
        "ld-linux-x86-64.so.2": root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    }


def test_a_library_missing_from_the_packages_fails_the_build(tmp_path):
    root = _fake_userland(tmp_path / "userland")
    (root / "lib/x86_64-linux-gnu/libc.so.6").unlink()
    with pytest.raises(ImageError, match=r"libc\.so\.6.*none of the recipe's packages"):
        linux.library_closure([root / "usr/sbin/dropbear"], root)


# --- the initramfs ---------------------------------------------------------------------------


def read_newc(archive):
    """{name: (mode, uid, gid, data, (rdevmajor, rdevminor))} of a newc archive."""
    entries, offset = {}, 0
    while True:
        assert archive[offset:offset + 6] == b"070701"
        fields = [int(archive[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = offset + 110
        name = archive[name_start:name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = archive[data_start:data_start + filesize]
        offset = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (fields[1], fields[2], fields[3], data, (fields[9], fields[10]))


def _build_rootfs(tmp_path, monkeypatch):
    """install_userland + install_config on fake packages, as the build does."""
    userland = _fake_userland(tmp_path / "userland")
    listing = "bin/sh\nsbin/init\nsbin/modprobe\nusr/bin/env\nbin/busybox\n"

    def fake_run_host(argv, **_):
        assert argv[1] == "--list-full"
        return CommandResult(" ".join(argv), 0, listing, "", 0.0)

    monkeypatch.setattr(linux, "run_host", fake_run_host)
    recipe = dataclasses.replace(linux.load_recipe(),
                                 programs=(("usr/sbin/dropbear", "usr/sbin/dropbear"),))
    rootfs = tmp_path / "rootfs"
    linux.install_userland(recipe, userland, rootfs)
    files = linux.config_files(recipe, ["ahci", "ext4"])
    linux.install_config(rootfs, files)
    return rootfs


def test_initramfs_holds_what_the_guest_needs(tmp_path, monkeypatch):
    rootfs = _build_rootfs(tmp_path, monkeypatch)
    target = tmp_path / "initrd.img"
    linux.write_initramfs(rootfs, target)
    entries = read_newc(gzip.decompress(target.read_bytes()))

    for path in ["init", "bin/busybox", "bin/sh", "sbin/init", "sbin/modprobe", "etc/inittab",
                 "etc/snaptest/init.sh", "etc/snaptest/modules", "etc/passwd", "etc/group",
                 "etc/shells", "root/.ssh", "usr/sbin/dropbear",
                 "lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libtomcrypt.so.1",
                 "lib64/ld-linux-x86-64.so.2", "dev/console", "dev/null", "proc", "sys",
                 "tmp", "run", "data", "etc/dropbear"]:
        assert path in entries, path
    assert all(uid == 0 and gid == 0 for _, uid, gid, _, _ in entries.values())

    def mode(path):
        return entries[path][0]

    assert stat.S_ISLNK(mode("init")) and entries["init"][3] == b"/bin/busybox"
    assert entries["lib64/ld-linux-x86-64.so.2"][3] == \
        b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert stat.S_ISCHR(mode("dev/console")) and entries["dev/console"][4] == (5, 1)
    # dropbear refuses keys in group- or world-accessible places, and shells not in /etc/shells.
    assert stat.S_IMODE(mode("root")) == 0o700 and stat.S_IMODE(mode("root/.ssh")) == 0o700
    assert "root/.ssh/authorized_keys" not in entries, "the key comes from the config drive"
    assert b"/bin/sh\n" in entries["etc/shells"][3]
    assert entries["etc/passwd"][3].startswith(b"root:x:0:0:root:/root:/bin/sh")
    assert stat.S_IMODE(mode("tmp")) == 0o1777
    assert stat.S_IMODE(mode("etc/snaptest/init.sh")) == 0o755
    assert entries["etc/snaptest/modules"][3] == b"ahci\next4\n"
    assert entries["etc/inittab"][3] == (linux.RECIPE_DIR / "inittab").read_bytes()
    # parents come before children: the kernel's unpacker does not create directories
    names = list(entries)
    assert names.index("root") < names.index("root/.ssh")


def test_initramfs_is_reproducible(tmp_path, monkeypatch):
    rootfs = _build_rootfs(tmp_path, monkeypatch)
    linux.write_initramfs(rootfs, tmp_path / "a.img")
    linux.write_initramfs(rootfs, tmp_path / "b.img")
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_keypair_is_openssh_ed25519(tmp_path):
    public = linux.write_keypair(tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub",
                                 "bhyve-snaptest@linux")
    assert public.startswith("ssh-ed25519 ")
    assert (tmp_path / "id_ed25519").read_text().startswith(
        "-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (tmp_path / "id_ed25519.pub").read_text() == public + "\n"


# --- manifest, cache, registry ---------------------------------------------------------------


def test_manifest_format():
    recipe = linux.load_recipe()
    built = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    data = json.loads(json.dumps(linux.manifest_data("0123456789abcdef", recipe, RESOLUTION,
                                                     ["ahci", "ext4"], built)))
    assert data["name"] == "linux" and data["digest"] == "0123456789abcdef"
    assert data["kernel_package"] == "linux-image-6.1.0-99-amd64"
    assert data["kernel_version"] == "6.1.0-99-amd64"
    assert data["packages"] == {"linux-image-6.1.0-99-amd64": "6.1.999-1",
                                "busybox-static": "1:1.35.0-4", "libc6": "2.36-9"}
    assert data["built_at"] == "2025-01-02T03:04:05+00:00"
    assert data["kernel_cmdline"] == recipe.cmdline
    assert data["ssh_user"] == "root" and data["ssh_key"] == "id_ed25519"
    assert data["ready_pattern"] == "SNAPTEST-READY"
    assert (data["disk"], data["memory_dir"], data["data_disk_mount"]) == \
        ("disk.img", "/tmp", "/data")


def _complete_image(directory):
    directory.mkdir(parents=True)
    for name in linux.IMAGE_FILES:
        (directory / name).write_text("x")


def test_cached_build_returns_at_once_and_a_recipe_change_rebuilds(tmp_path, recipe_dir,
                                                                   monkeypatch):
    monkeypatch.setattr(linux, "check_host_tools", lambda: None)
    monkeypatch.setattr(linux, "resolve_packages", lambda recipe, apt_dir: RESOLUTION)

    def no_build(*args, **kwargs):
        raise AssertionError("built although the image was cached")

    monkeypatch.setattr(linux, "_assemble", no_build)
    digest = linux.image_digest(linux.load_recipe(recipe_dir).sources, RESOLUTION.versions())
    cached = tmp_path / "cache" / f"linux-{digest}"
    _complete_image(cached)

    result = linux.build_linux_image(tmp_path / "cache", recipe_dir=recipe_dir, progress=False)
    assert result == cached
    assert linux.find_linux_image(tmp_path / "cache") == cached

    with (recipe_dir / "init.sh").open("a") as f:
        f.write("# changed\n")
    with pytest.raises(AssertionError, match="built although"):
        linux.build_linux_image(tmp_path / "cache", recipe_dir=recipe_dir, progress=False)
    assert not list((tmp_path / "cache").glob(".build-*")), "temporary build dir left behind"


def test_concurrent_builds_of_one_digest_assemble_once(tmp_path, recipe_dir, monkeypatch):
    """Two builds at once (threads: flock(2) locks conflict between open files, not only
    between processes): the second waits on the first's lock and returns its result."""
    monkeypatch.setattr(linux, "check_host_tools", lambda: None)
    monkeypatch.setattr(linux, "resolve_packages", lambda recipe, apt_dir: RESOLUTION)
    assembled = []

    def slow_assemble(recipe, resolution, digest, *, work, debs_dir, bar):
        assembled.append(digest)
        time.sleep(0.5)
        image = work / "image"
        image.mkdir()
        for name in linux.IMAGE_FILES:
            (image / name).write_text(name)

    monkeypatch.setattr(linux, "_assemble", slow_assemble)
    results = []

    def build():
        results.append(linux.build_linux_image(tmp_path / "cache", recipe_dir=recipe_dir,
                                               progress=False))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(assembled) == 1 and len(results) == 2 and results[0] == results[1]
    assert stat.S_IMODE(results[0].stat().st_mode) == 0o555
    assert stat.S_IMODE((results[0] / "disk.img").stat().st_mode) == 0o444
    assert linux.find_linux_image(tmp_path / "cache") == results[0]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "linux", results[0].name]


def test_find_image_needs_a_complete_build_and_no_apt(tmp_path, monkeypatch):
    def no_commands(*args, **kwargs):
        raise AssertionError("find_image ran a host command")

    monkeypatch.setattr(linux, "run_host", no_commands)
    cache = tmp_path / "cache"
    assert images.find_image("linux", cache) is None
    _complete_image(cache / "linux-0123456789abcdef")
    (cache / "linux").symlink_to("linux-0123456789abcdef")
    assert images.find_image("linux", cache) == cache / "linux-0123456789abcdef"
    (cache / "linux-0123456789abcdef" / "manifest.json").unlink()
    assert images.find_image("linux", cache) is None


def test_unknown_image_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="linux"):
        images.find_image("plan9", tmp_path)
    with pytest.raises(ConfigError):
        images.build_image("plan9", tmp_path)
