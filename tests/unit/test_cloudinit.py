"""The NoCloud config drive, read back the way FreeBSD reads it; no VM.

What matters: the label is exactly lowercase ``cidata`` in the primary volume descriptor
(where GEOM reads it for /dev/iso9660/<label>), the files carry the lowercase names nuageinit
opens (Rock Ridge, which FreeBSD's cd9660 uses, and Joliet), and their YAML says what
nuageinit expects: first line ``#cloud-config``, key for the default user, static address.
"""

import io

import pycdlib
import pytest

from fixtures.errors import ConfigError
from fixtures.images import cloudinit

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


# --- a tiny reader for the YAML subset cloudinit.py writes (PyYAML is not a dependency) ------


def _scalar(text):
    if text.startswith('"'):
        assert text.endswith('"') and '"' not in text[1:-1], text
        return text[1:-1]
    return int(text) if text.isdigit() else text


def _block(lines, pos):
    indent = lines[pos][0]
    if lines[pos][1].startswith("- "):
        items = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            item = lines[pos][1][2:]
            if not item.startswith('"') and ":" in item:  # "- key: value" opens a mapping
                lines[pos] = (indent + 2, item)
                value, pos = _block(lines, pos)
            else:
                value, pos = _scalar(item), pos + 1
            items.append(value)
        return items, pos
    mapping = {}
    while pos < len(lines) and lines[pos][0] == indent:
        key, sep, rest = lines[pos][1].partition(":")
        assert sep and key not in mapping, lines[pos]
        pos += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip())
        else:
            assert lines[pos][0] > indent, f"{key}: nothing nested"
            mapping[key], pos = _block(lines, pos)
    return mapping, pos


def tiny_yaml(text):
    lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert all("\t" not in line for _, line in lines)
    value, end = _block(lines, 0)
    assert end == len(lines), f"stray line: {lines[end]}"
    return value


def test_tiny_yaml_reader_reads_nesting():
    text = 'a:\n  b: "x: y"\n  c:\n    - "1"\n    - name: n\n      k: 2\nd: e\n'
    assert tiny_yaml(text) == {"a": {"b": "x: y", "c": ["1", {"name": "n", "k": 2}]}, "d": "e"}


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


def test_user_data_is_cloud_config_with_key_hostname_and_network(tmp_path):
    text = _read_files(_drive(tmp_path), rr_path=True)["user-data"]
    # nuageinit compares the first line exactly
    assert text.splitlines()[0] == "#cloud-config"
    assert tiny_yaml(text) == {
        "hostname": "freebsd_guest",
        "ssh_authorized_keys": [KEY],
        "ssh_pwauth": "false",  # a YAML boolean; this reader keeps plain scalars as text
        "network": {"version": 2, "ethernets": {"id0": {
            "match": {"name": "vtnet0"},
            "addresses": ["10.0.0.2/24"],
            "gateway4": "10.0.0.1",
        }}},
    }


def test_meta_data_and_network_config(tmp_path):
    files = _read_files(_drive(tmp_path, interface="em0"), rr_path=True)
    assert tiny_yaml(files["meta-data"]) == {"instance-id": "bhyve-snaptest-freebsd_guest",
                                             "local-hostname": "freebsd_guest"}
    # network-config replaces user-data's network in newer nuageinit: they must agree
    network = tiny_yaml(files["network-config"])
    assert network == tiny_yaml(files["user-data"])["network"]
    assert network["ethernets"]["id0"]["match"] == {"name": "em0"}


def test_mac_address_joins_the_match_rule_in_lowercase(tmp_path):
    files = _read_files(_drive(tmp_path, mac_address="58:9C:FC:00:00:2A"), rr_path=True)
    match = tiny_yaml(files["network-config"])["ethernets"]["id0"]["match"]
    assert match == {"name": "vtnet0", "macaddress": "58:9c:fc:00:00:2a"}


def test_another_user_gets_the_key_instead_of_the_default_user(tmp_path):
    data = tiny_yaml(_read_files(_drive(tmp_path, user="snap"), rr_path=True)["user-data"])
    assert "ssh_authorized_keys" not in data
    assert data["users"] == [{"name": "snap", "shell": "/bin/sh", "groups": "wheel",
                              "ssh_authorized_keys": [KEY]}]


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
])
def test_bad_values_are_config_errors_and_write_nothing(tmp_path, bad):
    with pytest.raises(ConfigError):
        _drive(tmp_path, **bad)
    assert not any(tmp_path.iterdir())


def test_runcmd_stops_the_reboot_turns_swap_off_and_mounts_a_tmpfs(tmp_path):
    commands = cloudinit.first_boot_commands("/var/snaptest-mem", "freebsd", 128)
    data = tiny_yaml(_read_files(_drive(tmp_path, runcmd=commands),
                                 rr_path=True)["user-data"])
    assert data["runcmd"] == ["rm -f /firstboot-reboot",
                              "swapoff -a",
                              "mkdir -p /var/snaptest-mem",
                              "mount -t tmpfs -o size=128m tmpfs /var/snaptest-mem",
                              "chown freebsd /var/snaptest-mem"]
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    assert "runcmd" not in _read_files(_drive(plain_dir), rr_path=True)["user-data"]


def test_password_logins_are_turned_off(tmp_path):
    """The image sets PasswordAuthentication yes and its user has a known password."""
    text = _read_files(_drive(tmp_path), rr_path=True)["user-data"]
    assert "\nssh_pwauth: false\n" in text  # a YAML boolean, unquoted
