"""The NoCloud config drive, read back the way FreeBSD reads it; no VM.

What matters: the label is exactly lowercase ``cidata`` in the primary volume descriptor
(where GEOM reads it for /dev/iso9660/<label>), the files carry the lowercase names nuageinit
opens (Rock Ridge, which FreeBSD's cd9660 uses, and Joliet), meta-data is the YAML nuageinit
reads, and user-data is the executable first-boot script (tests/unit/test_firstboot_script.py
runs it).
"""

import io

import pycdlib
import pytest
import yaml

from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.images import cloudinit

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+MH4E8KO32N5CXRvXVqvyZVl0+6ue4DobdhU0FqFd+ a@b"
NAMES = {"meta-data", "user-data", "network-config"}
#: Where the primary volume descriptor starts, and its volume identifier field in it.
PVD_OFFSET, VOLUME_ID_FIELD = 0x8000, slice(0x8028, 0x8048)


def _drive(tmp_path, **overrides):
    arguments = {"hostname": "freebsd_guest", "ssh_public_key": KEY, "user": "freebsd",
                 "address_cidr": "10.0.0.2/24", "gateway": "10.0.0.1",
                 "interface": "vtnet0"} | overrides
    path = tmp_path / "cidata.iso"
    cloudinit.make_config_drive(path, **arguments)
    return path


def _read_files(path, **kind):
    """{name: text} of the root directory, through ``rr_path`` or ``joliet_path``."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        (facility, _), = kind.items()
        files = {}
        for name in NAMES:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{facility: f"/{name}"})
            files[name] = out.getvalue().decode()
        return files
    finally:
        iso.close()


# --- the ISO image ---------------------------------------------------------------------------


def test_label_is_lowercase_cidata_where_geom_reads_it(tmp_path):
    raw = _drive(tmp_path).read_bytes()
    assert raw[PVD_OFFSET:PVD_OFFSET + 6] == b"\x01CD001"
    assert raw[VOLUME_ID_FIELD] == b"cidata" + b" " * 26
    iso = pycdlib.PyCdlib()
    iso.open(str(tmp_path / "cidata.iso"))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        rock_ridge = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                      if c.rock_ridge is not None and not c.is_dot() and not c.is_dotdot()}
        assert rock_ridge == NAMES
    finally:
        iso.close()


def test_rock_ridge_and_joliet_names_give_the_same_files(tmp_path):
    path = _drive(tmp_path)
    assert _read_files(path, rr_path=True) == _read_files(path, joliet_path=True)


def test_user_data_is_an_executable_script_and_meta_data_names_the_host(tmp_path):
    """The first nuageinit executes user-data from the drive itself: Rock Ridge must carry
    the execute bit, which FreeBSD's cd9660 turns into the file's mode."""
    path = _drive(tmp_path)
    files = _read_files(path, rr_path=True)
    assert files["user-data"].startswith("#!/bin/sh\n")
    assert "'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+MH4E8KO32N5CXRvXVqvyZVl0+6ue4DobdhU0FqFd+'" \
        in files["user-data"], "the key, without its free-text comment"
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "bhyve-snaptest-freebsd_guest", "local-hostname": "freebsd_guest"}
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        modes = {name: iso.get_record(rr_path=f"/{name}").rock_ridge.get_file_mode()
                 for name in NAMES}
    finally:
        iso.close()
    assert modes == {"user-data": 0o100755, "meta-data": 0o100444,
                     "network-config": 0o100444}


def test_network_config_matches_the_nic_by_mac_else_by_name(tmp_path):
    by_name = yaml.safe_load(_read_files(_drive(tmp_path), rr_path=True)["network-config"])
    assert by_name == {"version": 2, "ethernets": {"id0": {
        "match": {"name": "vtnet0"}, "addresses": ["10.0.0.2/24"], "gateway4": "10.0.0.1"}}}
    other = tmp_path / "mac"
    other.mkdir()
    files = _read_files(_drive(other, mac_address="58:9C:FC:00:00:2A"), rr_path=True)
    match = yaml.safe_load(files["network-config"])["ethernets"]["id0"]["match"]
    assert match == {"macaddress": "58:9c:fc:00:00:2a"}


def test_the_linux_guest_gets_cloud_config_with_its_root_key(tmp_path):
    files = _read_files(_drive(tmp_path, user="root", guest="linux",
                               mac_address="58:9c:fc:00:00:2a"), rr_path=True)
    assert files["user-data"].splitlines()[0] == "#cloud-config"
    assert yaml.safe_load(files["user-data"]) == {
        "hostname": "freebsd_guest", "ssh_authorized_keys": [KEY]}


def test_the_script_gets_the_memory_directory_and_size(tmp_path):
    text = _read_files(_drive(tmp_path, memory_dir="/var/m", memory_mib=256),
                       rr_path=True)["user-data"]
    assert 'step mount -t tmpfs -o size=256m tmpfs "$R/var/m"' in text


def test_rewriting_replaces_the_drive_and_leaves_no_temporary_file(tmp_path):
    _drive(tmp_path, hostname="first")
    path = _drive(tmp_path, hostname="second")
    assert "second" in _read_files(path, rr_path=True)["meta-data"]
    assert [p.name for p in tmp_path.iterdir()] == ["cidata.iso"]


@pytest.mark.parametrize(("model", "interface"), [("virtio-net", "vtnet0"), ("e1000", "em0")])
def test_freebsd_interface(model, interface):
    assert cloudinit.freebsd_interface(model) == interface


def test_freebsd_interface_rejects_an_unknown_model():
    with pytest.raises(ConfigError, match="virtio-net"):
        cloudinit.freebsd_interface("rtl8139")


@pytest.mark.parametrize("bad", [
    {"hostname": "-guest"},
    {"hostname": "two words"},
    {"ssh_public_key": KEY + "\nssh-rsa AAAA second"},
    {"ssh_public_key": 'ssh-ed25519 AAAA "quoted"'},
    {"ssh_public_key": "not a key"},
    {"user": "Root"},
    {"user": "root"},
    {"address_cidr": "10.0.0.2"},
    {"address_cidr": "10.0.0.300/24"},
    {"gateway": "10.0.1.1"},
    {"gateway": "10.0.0.2"},
    {"interface": "vtnet"},
    {"mac_address": "58:9c:fc:00:00"},
    {"memory_dir": "var/m"},
    {"memory_dir": "/var/m m"},
    {"memory_dir": "/var/../etc"},
    {"memory_mib": 0},
    {"guest": "windows"},
    {"guest": "linux"},
])
def test_bad_values_are_config_errors_and_write_nothing(tmp_path, bad):
    with pytest.raises(ConfigError):
        _drive(tmp_path, **bad)
    assert not any(tmp_path.iterdir())
