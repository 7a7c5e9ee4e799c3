"""bhyve's getopt(3) and bhyvectl's getopt_long(3), replayed: the harness's command lines must
parse the way the real programs parse them."""

import pytest

from bhyve_snaptest.bhyve.getopt import (
    OPTSTRING_13,
    OPTSTRING_14,
    OPTSTRING_14_NO_SNAPSHOT,
    OPTSTRING_D34547,
    OPTSTRING_MAIN,
    OPTSTRING_MAIN_NO_SNAPSHOT,
    GetoptError,
    bsd_getopt,
    parse_bhyve_argv,
    parse_bhyvectl_argv,
)

FIRMWARE = "bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd"
#: The seed's boot command line (D34547 test plan), without argv[0] and -t.
SEED = ["-c", "1", "-m", "256M", "-H", "-A", "-P", "-s", "0:0,hostbridge", "-s", "1:0,lpc",
        "-l", FIRMWARE, "-s", "2:0,virtio-net,tap0", "-s", "3:0,ahci-hd,main.img",
        "-l", "com1,stdio"]


def test_snapshot_strings_differ_only_by_r():
    assert OPTSTRING_MAIN == OPTSTRING_MAIN_NO_SNAPSHOT + "r:"
    assert (OPTSTRING_14, OPTSTRING_14_NO_SNAPSHOT) == (OPTSTRING_MAIN,
                                                         OPTSTRING_MAIN_NO_SNAPSHOT)
    assert OPTSTRING_MAIN.replace("f:", "") == OPTSTRING_13


def test_seed_boot_line_keeps_every_option_in_order():
    parsed = parse_bhyve_argv([*SEED, "freebsd_guest"], OPTSTRING_MAIN)
    assert parsed.vm_name == "freebsd_guest"
    assert parsed.positional == ["freebsd_guest"]
    assert parsed.values("s") == ("0:0,hostbridge", "1:0,lpc", "2:0,virtio-net,tap0",
                                  "3:0,ahci-hd,main.img")
    assert parsed.values("l") == (FIRMWARE, "com1,stdio")
    assert parsed.options[:3] == (("c", "1"), ("m", "256M"), ("H", None))
    assert parsed.restore_file is None


def test_seed_restore_line_parses_on_every_snapshot_bhyve():
    argv = [*SEED, "-r", "file.ckp", "freebsd_guest"]
    for optstring in (OPTSTRING_MAIN, OPTSTRING_13, OPTSTRING_D34547):
        assert parse_bhyve_argv(argv, optstring).restore_file == "file.ckp"


def test_r_is_illegal_without_snapshot_support_and_says_why():
    with pytest.raises(GetoptError, match="illegal option -- r") as caught:
        parse_bhyve_argv([*SEED, "-r", "file.ckp", "vm"], OPTSTRING_MAIN_NO_SNAPSHOT)
    assert caught.value.option == "-r"
    assert "BHYVE_SNAPSHOT" in str(caught.value)


def test_t_exists_only_with_d34547():
    argv = [*SEED, "-t", "/vm/ckp", "freebsd_guest"]
    assert parse_bhyve_argv(argv, OPTSTRING_D34547).checkpoint_dir == "/vm/ckp"
    with pytest.raises(GetoptError, match="D34547"):
        parse_bhyve_argv(argv, OPTSTRING_MAIN)


def test_f_is_unknown_to_13():
    assert parse_bhyve_argv(["-f", "name=opt/x,string=y", "vm"], OPTSTRING_MAIN).has("f")
    with pytest.raises(GetoptError, match="illegal option -- f"):
        parse_bhyve_argv(["-f", "name=opt/x,string=y", "vm"], OPTSTRING_13)


def test_clustered_flags_and_attached_values():
    parsed = parse_bhyve_argv(["-AHPc2", "-m512M", "-uw", "vm"], OPTSTRING_MAIN)
    assert parsed.options == (("A", None), ("H", None), ("P", None), ("c", "2"),
                              ("m", "512M"), ("u", None), ("w", None))


def test_value_is_the_next_word_even_if_it_looks_like_an_option():
    options, operands = bsd_getopt(["-c", "-m", "vm"], OPTSTRING_MAIN)
    assert options == [("c", "-m")]
    assert operands == ["vm"]


def test_missing_value_at_the_end():
    with pytest.raises(GetoptError, match="requires an argument -- m") as caught:
        parse_bhyve_argv(["-H", "-m"], OPTSTRING_MAIN)
    assert caught.value.option == "-m"


def test_colon_is_never_an_option():
    with pytest.raises(GetoptError, match="illegal option -- :"):
        bsd_getopt(["-:"], OPTSTRING_MAIN)


def test_double_dash_ends_options_so_a_name_may_start_with_a_dash():
    parsed = parse_bhyve_argv(["-H", "--", "-odd-name"], OPTSTRING_MAIN)
    assert parsed.options == (("H", None),)
    assert parsed.vm_name == "-odd-name"


def test_lone_dash_is_an_operand():
    assert bsd_getopt(["-H", "-", "-P"], OPTSTRING_MAIN) == ([("H", None)], ["-", "-P"])


def test_no_permutation_an_option_after_the_name_is_a_second_operand():
    with pytest.raises(GetoptError, match="before the VM name"):
        parse_bhyve_argv(["-H", "vm", "-r", "file.ckp"], OPTSTRING_MAIN)


def test_vm_name_is_required_unless_it_comes_from_elsewhere():
    with pytest.raises(GetoptError, match="no VM name"):
        parse_bhyve_argv(SEED, OPTSTRING_MAIN)
    restored = parse_bhyve_argv([*SEED, "-r", "file.ckp"], OPTSTRING_MAIN)
    assert restored.vm_name is None  # bhyve reads it from file.ckp.meta
    named = parse_bhyve_argv(["-o", "name=vm1", "-o", "name=vm2"], OPTSTRING_MAIN)
    assert named.vm_name == "vm2"  # the last -o wins, as in bhyve's config tree
    assert parse_bhyve_argv(["-k", "vm.conf"], OPTSTRING_MAIN).vm_name is None


def test_restore_without_operand_takes_the_name_from_the_checkpoint():
    parsed = parse_bhyve_argv(["-o", "name=cfg", "-r", "file.ckp"], OPTSTRING_MAIN)
    assert parsed.vm_name is None  # FILE.meta's vmname overrides -o name=


def test_operand_wins_over_config_name():
    parsed = parse_bhyve_argv(["-o", "name=cfg", "operand"], OPTSTRING_MAIN)
    assert parsed.vm_name == "operand"
    assert parsed.config == {"name": "cfg"}


# -- bhyvectl -------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--suspend=/vm/ck", "--vm=seed"],
    ["--suspend", "/vm/ck", "--vm=seed"],
    ["--vm", "seed", "--suspend", "/vm/ck"],
])
def test_suspend_both_forms(argv):
    assert parse_bhyvectl_argv(argv) == {"vm": "seed", "suspend": "/vm/ck"}


def test_space_form_swallows_the_next_word():
    # --suspend takes "--vm=seed" as its file name, so --vm is missing: usage, exit 1.
    with pytest.raises(GetoptError, match="no --vm"):
        parse_bhyvectl_argv(["--suspend", "--vm=seed"])


def test_flags():
    result = parse_bhyvectl_argv(["--vm=seed", "--destroy", "--force-poweroff", "--create",
                                  "--force-reset"])
    assert result == {"vm": "seed", "destroy": True, "force-poweroff": True, "create": True,
                      "force-reset": True}


@pytest.mark.parametrize("argv", [
    ["--vm=seed", "--suspend=a", "--checkpoint=b"],
    ["--vm=seed", "--suspend=a", "--suspend=b"],
    ["--vm=seed", "--checkpoint=a", "--checkpoint", "b"],
])
def test_one_save_per_call(argv):
    with pytest.raises(GetoptError, match="one --suspend or --checkpoint"):
        parse_bhyvectl_argv(argv)


def test_no_snapshot_build_has_no_suspend():
    with pytest.raises(GetoptError, match="BHYVE_SNAPSHOT") as caught:
        parse_bhyvectl_argv(["--suspend=x", "--vm=seed"], snapshot=False)
    assert caught.value.option == "--suspend"
    assert parse_bhyvectl_argv(["--destroy", "--vm=seed"], snapshot=False)["destroy"] is True


def test_rundir_only_on_newest_main():
    argv = ["--suspend=x", "--vm=seed", "--rundir=/tmp/run"]
    with pytest.raises(GetoptError, match="D57494"):
        parse_bhyvectl_argv(argv)
    assert parse_bhyvectl_argv(argv, rundir=True)["rundir"] == "/tmp/run"


@pytest.mark.parametrize(("argv", "message"), [
    (["--vm=seed", "--get-stats"], "not a bhyvectl option the harness uses"),
    (["--vm=seed", "--susp=x"], "abbreviation"),
    (["--vm=seed", "--destroy=yes"], "doesn't take an argument"),
    (["--vm=seed", "-d"], "long options only"),
    (["--vm"], "requires an argument -- vm"),
    (["--vm=seed", "leftover"], "stray operands"),
    (["--vm=seed", "--", "--destroy"], "stray operands"),
    (["--destroy"], "no --vm"),
    (["--vm=", "--destroy"], "empty"),
])
def test_bhyvectl_rejects(argv, message):
    with pytest.raises(GetoptError, match=message):
        parse_bhyvectl_argv(argv)


def test_last_vm_wins():
    assert parse_bhyvectl_argv(["--vm=a", "--vm=b", "--destroy"])["vm"] == "b"
