"""FILE.meta parsing and checking, on samples of main's and 13.x's layout."""

import json

import pytest
from sample_text import sample

from bhyve_snaptest.bhyve.meta import (
    KERN_STRUCTS_MAIN,
    LAYOUT_13,
    LAYOUT_MAIN,
    MetaError,
    check_meta,
    kern_file_problems,
    layout_problems,
    parse_meta,
    pci_instance_name,
)

#: The seed's -s slots (D34547's test plan).
SEED_SLOTS = (("0:0", "hostbridge"), ("1:0", "lpc"), ("2:0", "virtio-net"), ("3:0", "ahci-hd"))
#: What main's FILE.meta calls them: pi_name, "%s@pci.%d.%d.%d" of pe_emu (pci_emul.c).
SEED_DEVICES = ("hostbridge@pci.0.0.0", "lpc@pci.0.1.0", "virtio-net@pci.0.2.0",
                "ahci@pci.0.3.0")
MIB_256 = 256 * 1024 * 1024



def _edited(edit) -> str:
    root = json.loads(sample("checkpoint.meta"))
    edit(root)
    return json.dumps(root, indent=2)


def _check(meta, **changes):
    expected = {"vm_name": "freebsd_guest", "memory_bytes": MIB_256, "cpus": 1,
                "slots": SEED_SLOTS, **changes}
    return check_meta(meta, **expected)


def test_mainsample():
    meta = parse_meta(sample("checkpoint.meta"))
    assert (meta.vm_name, meta.memory_bytes, meta.cpus, meta.memflags, meta.layout) == (
        "freebsd_guest", MIB_256, 1, 0, LAYOUT_MAIN)
    assert meta.kern_structs == KERN_STRUCTS_MAIN
    assert meta.devices == (*SEED_DEVICES, "atkbdc")
    assert meta.kern_file_size == 43816  # stated in the sample's header
    assert _check(meta) == []


def test_numbers_quoted_by_older_libxo_are_accepted():
    def quote(root):
        for key in ("ncpus", "memsize", "memflags"):
            root["basic metadata"][key] = str(root["basic metadata"][key])
        for entry in root["devices"]:
            entry["size"] = str(entry["size"])
    assert parse_meta(_edited(quote)) == parse_meta(sample("checkpoint.meta"))


@pytest.mark.parametrize(("changes", "problem"), [
    ({"vm_name": "other"}, "saved VM is 'freebsd_guest', expected 'other'"),
    ({"memory_bytes": 2 * MIB_256}, "memory is 268435456 bytes, expected 536870912"),
    ({"cpus": 2}, "1 vCPUs saved, expected 2"),
])
def test_identity_mismatches(changes, problem):
    assert _check(parse_meta(sample("checkpoint.meta")), **changes) == [problem]


@pytest.mark.parametrize(("slot", "emulation", "name"), [
    ("3:0", "ahci-hd", "ahci@pci.0.3.0"),
    ("4:0", "ahci-cd", "ahci@pci.0.4.0"),
    ("2", "virtio-net", "virtio-net@pci.0.2.0"),
    ("1:2:3", "nvme", "nvme@pci.1.2.3"),
    ("0:31:0", "lpc", "lpc@pci.0.31.0"),
])
def test_pci_devices_are_named_as_pci_emul_init_names_them(slot, emulation, name):
    """pci_parse_slot() takes b:s:f, s:f or s; aliases name the instance by their target."""
    assert pci_instance_name(slot, emulation) == name


def test_different_device_layout_is_reported_both_ways():
    problems = _check(parse_meta(sample("checkpoint.meta")),
                      slots=(*SEED_SLOTS[:3], ("3:0", "virtio-blk")))
    assert len(problems) == 2
    assert "not saved: virtio-blk@pci.0.3.0" in problems[0]
    assert "should not have: ahci@pci.0.3.0" in problems[1]


def test_a_device_in_another_slot_is_another_device():
    problems = _check(parse_meta(sample("checkpoint.meta")),
                      slots=(*SEED_SLOTS[:3], ("5:0", "ahci-hd")))
    assert "not saved: ahci@pci.0.5.0" in problems[0]


def test_two_devices_of_one_emulation_are_the_seed_with_its_config_drive():
    """ahci-hd and ahci-cd both become 'ahci' instances, told apart by their slot; on main
    that is no problem (the 'one device per type' limit was 13.x's)."""
    def add_cd(root):
        cd = dict(root["devices"][3], device="ahci@pci.0.4.0")
        root["devices"].insert(4, cd)
    meta = parse_meta(_edited(add_cd))
    assert _check(meta, slots=(*SEED_SLOTS, ("4:0", "ahci-cd"))) == []


def test_empty_blobs_and_missing_structs_break_restore():
    def damage(root):
        del root["kern_structs"][0]          # vhpet gone
        root["devices"][1]["size"] = 0       # lpc saved empty
        root["devices"][2]["file_offset"] = -1
    problems = layout_problems(parse_meta(_edited(damage)))
    assert problems == ["virtio-net@pci.0.2.0: negative size or offset",
                        "kernel structs missing: vhpet (restore stops with 'Cannot find kern "
                        "struct')",
                        "saved with size 0: lpc@pci.0.1.0 (restore refuses them)"]
    assert layout_problems(parse_meta(sample("checkpoint.meta"))) == []


def test_gaps_between_blobs_are_allowed():
    def gap(root):
        for entry in root["devices"]:
            entry["file_offset"] += 4096
    meta = parse_meta(_edited(gap))
    assert _check(meta) == []
    assert meta.kern_file_size == 43816 + 4096


def test_blobs_must_fit_in_the_kern_file():
    meta = parse_meta(sample("checkpoint.meta"))
    assert kern_file_problems(meta, 43816) == []
    [problem] = kern_file_problems(meta, 43815)
    assert problem.startswith("atkbdc needs bytes 42640-43816 of FILE.kern, which has 43815")


def test_truncated_file_says_why():
    text = sample("checkpoint.meta")
    with pytest.raises(MetaError, match="truncated"):
        parse_meta(text[: len(text) // 2])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.pop("basic metadata"), "no 'basic metadata'"),
    (lambda r: r["basic metadata"].pop("vmname"), "no 'vmname'"),
    (lambda r: r.pop("kern_structs"), "neither 'kern_structs'"),
    (lambda r: r.pop("devices"), "no 'devices'"),
    (lambda r: r["basic metadata"].update(ncpus=True), "ncpus is True, not a number"),
    (lambda r: r["basic metadata"].update(memsize="256M"), "memsize is '256M'"),
    (lambda r: r["devices"][0].pop("file_offset"), r"devices\[0\] has no 'file_offset'"),
    (lambda r: r["kern_structs"].__setitem__(0, []), r"kern_structs\[0\] is not a JSON object"),
    (lambda r: r.update(devices={}), "'devices' is not a JSON array"),
])
def test_malformed(edit, message):
    with pytest.raises(MetaError, match=message):
        parse_meta(_edited(edit))


def test_top_level_must_be_an_object():
    with pytest.raises(MetaError, match="not a JSON object"):
        parse_meta("[]")


def test_13_layout():
    meta = parse_meta(sample("checkpoint-13.meta"))
    assert meta.layout == LAYOUT_13
    assert meta.kern_structs[:3] == ("vhpet", "vm", "vmx")
    assert meta.devices == ("atkbdc", "virtio-net", "lpc", "ahci-hd")  # size 0 = absent
    assert len(meta.device_entries) == 11  # the whole fixed table
    assert _check(meta) == []  # hostbridge is not in 13.x's table: not expected


def test_13_layout_still_finds_missing_devices():
    meta = parse_meta(sample("checkpoint-13.meta"))
    assert any("not saved: virtio-blk" in p
               for p in _check(meta, slots=(*SEED_SLOTS, ("5:0", "virtio-blk"))))


def test_13_layout_accepts_ahci_state_under_the_alias_target():
    """Later 13.x matched its table against pe_emu of the alias target (pci_emul.c
    pci_find_slotted_dev()), so an ahci-hd disk's state is saved as 'ahci'; 13.0 matched
    the name typed after -s, 'ahci-hd'. Either is the disk's state."""
    def as_alias_target(root):
        for entry in root["devices"]:
            if entry["snapshot_req"] in ("ahci", "ahci-hd"):
                entry["size"], entry["snapshot_req"] = (
                    (4000, "ahci") if entry["snapshot_req"] == "ahci" else (0, "ahci-hd"))
    meta = parse_meta(_edited_13(as_alias_target))
    assert "ahci" in meta.devices and "ahci-hd" not in meta.devices
    assert _check(meta) == []


def _edited_13(edit) -> str:
    root = json.loads(sample("checkpoint-13.meta"))
    edit(root)
    return json.dumps(root, indent=2)


def test_13_struct_without_debug_name_is_named_by_number():
    root = json.loads(sample("checkpoint-13.meta"))
    for entry in root["structs"]:
        del entry["debug_name"]
    assert parse_meta(json.dumps(root)).kern_structs[0] == "#1"
