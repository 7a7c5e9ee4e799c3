"""Provenance: what produced a result, recorded with it."""

import subprocess
import sys

from bhyve_snaptest import provenance
from bhyve_snaptest.options import option_defaults


def test_the_harness_names_its_version_and_commit():
    info = provenance.harness()
    head = subprocess.run(["git", "-C", str(provenance.REPO_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert info["version"] == "0.1.0"
    assert info["git_commit"].removesuffix("-dirty") == head


def test_a_linux_host_says_freebsd_fields_do_not_apply():
    info = provenance.host()
    assert info["uname"].startswith("Linux ")
    assert info["freebsd_version"] == info["kernel_ident"] == provenance.NOT_FREEBSD


def test_a_binary_is_named_by_path_hash_and_version():
    info = provenance.binary(sys.executable, ["--version"])
    assert info["path"] == sys.executable and len(info["sha256"]) == 64
    assert info["version"].startswith("Python 3.")
    assert provenance.binary("no-such-binary-here") == {
        "name": "no-such-binary-here", "path": None, "sha256": None, "version": None}


def test_the_library_a_binary_loads_is_found_with_ldd(tmp_path, monkeypatch):
    """FreeBSD's ldd prints the same "soname => path" lines (libexec/rtld-elf)."""
    library = tmp_path / "libvmmapi.so.5"
    library.write_bytes(b"patched")
    ldd = tmp_path / "ldd"
    ldd.write_text(f"#!/bin/sh\necho \"$1:\"\necho \"\tlibvmmapi.so.5 => {library} "
                   "(0x800a00000)\"\necho \"\tlibc.so.7 => /lib/libc.so.7 (0x800b00000)\"\n")
    ldd.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    info = provenance.linked_library("sh", "libvmmapi")
    assert info["soname"] == "libvmmapi.so.5" and info["path"] == str(library)
    assert info["sha256"] == provenance.sha256_file(library)


def test_only_options_that_differ_from_their_defaults_are_listed():
    defaults = option_defaults()
    values = {**defaults, "cpus": 2, "bhyve": "/usr/obj/bhyve"}
    assert provenance.differing_options(defaults, values.__getitem__,
                                        defaults.__getitem__) == \
        {"cpus": "2", "bhyve": "/usr/obj/bhyve"}


def test_flattened_for_junit_and_summarised_for_the_report():
    record = {"harness": {"version": "0.1.0", "git_commit": "abc"},
              "host": {"uname": "FreeBSD h 15.0", "freebsd_version": "15.0\n15.0",
                       "kernel_ident": "GENERIC"},
              "hypervisor": {"driver": "bhyve",
                             "binaries": [{"name": "bhyve", "path": "/usr/sbin/bhyve",
                                           "sha256": "ff", "version": None}],
                             "libvmmapi": {"soname": "libvmmapi.so.5", "path": "/lib/x",
                                           "sha256": "ee"},
                             "kernel_bhyve_snapshot": "yes"},
              "options": {"expect_capsicum": "yes"}}
    flat = dict(provenance.flatten(record))
    assert flat["hypervisor.binaries.bhyve.sha256"] == "ff"
    assert flat["hypervisor.libvmmapi.path"] == "/lib/x"
    assert flat["harness.git_commit"] == "abc"
    lines = dict(provenance.summary(record))
    assert lines["bhyve"] == "/usr/sbin/bhyve sha256 ff"
    assert lines["options"] == "--expect-capsicum=yes"
    assert lines["kernel_bhyve_snapshot"] == "yes"
