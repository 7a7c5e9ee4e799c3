"""The FreeBSD guest's first-boot script, run on the host under FreeBSD stand-ins.

nuageinit runs it from the config drive (its first revision, before the network) or from
/var/cache/nuageinit (later revisions, after ``local``); the script tells the two apart by
``$0``. Here it runs from a copy at each of those paths under a fake root, and what root
would have done is read from the files it wrote and the stand-ins' log.
"""

from pathlib import Path

import pytest
import yaml

from bhyve_snaptest.images.firstboot_script import (
    FAKE_ROOT_VARIABLE,
    STATUS_FILE,
    FirstBootSetup,
    first_boot_script,
)
from tests.unit.freebsd_userland import run_script, userland

MAC = "58:9c:fc:00:00:2a"
SETUP = FirstBootSetup(hostname="guest0", user="freebsd", ssh_key="ssh-ed25519 AAAAC3Nz",
                       mac_address=MAC, interface="vtnet0", address_cidr="10.0.0.2/24",
                       gateway="10.0.0.1", memory_dir="/var/snaptest-mem", memory_mib=512)
#: Where each nuageinit revision runs the script from.
EARLY, LATE = "media/nuageinit/user-data", "var/cache/nuageinit/user_data"
#: The image's sshd_config tail (release/tools/basic-cloudinit.conf).
IMAGE_SSHD_CONFIG = "#PermitRootLogin no\nPasswordAuthentication yes\nUsePAM no\n"
IMAGE_FSTAB = ("/dev/gpt/rootfs   /       ufs     rw      1       1\n"
               "/dev/gpt/swapfs  none    swap    sw      0       0\n")


def _first_boot(tmp_path: Path, place: str, setup: FirstBootSetup = SETUP, **env: str):
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text(IMAGE_SSHD_CONFIG)
    (root / "etc/fstab").write_text(IMAGE_FSTAB)
    (root / "firstboot-reboot").touch()
    script = root / place
    script.parent.mkdir(parents=True)
    script.write_text(first_boot_script(setup))
    log = tmp_path / "root-actions.log"
    result = run_script(script, {"PATH": userland(tmp_path / "bin"),
                                 FAKE_ROOT_VARIABLE: str(root), "FREEBSD_LOG": str(log),
                                 **env})
    actions = log.read_text().splitlines() if log.exists() else []
    return result, root, actions


def _status(root: Path) -> dict[str, str]:
    text = (root / STATUS_FILE.lstrip("/")).read_text()
    return dict(line.partition("=")[::2] for line in text.splitlines())


def test_early_the_script_leaves_settings_for_the_rc_scripts_still_to_come(tmp_path):
    result, root, actions = _first_boot(tmp_path, EARLY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _status(root) == {"stage": "early", "failed": ""}
    etc = root / "etc"
    assert (etc / "rc.conf.d/network").read_text() == 'ifconfig_vtnet0="inet 10.0.0.2/24"\n'
    assert (etc / "rc.conf.d/routing").read_text() == 'defaultrouter="10.0.0.1"\n'
    assert (etc / "rc.conf.d/hostname").read_text() == 'hostname="guest0"\n'
    assert (etc / "rc.conf.d/firstboot_freebsd_update").read_text() == \
        'firstboot_freebsd_update_enable="NO"\n'
    assert not (root / "firstboot-reboot").exists()
    assert [a for a in actions if a.startswith("service")] == ["service sshd status"], \
        "nothing restarted: the network is not up yet"


def test_late_the_script_reconfigures_the_running_network(tmp_path):
    result, root, actions = _first_boot(tmp_path, LATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _status(root)["stage"] == "late"
    services = [a for a in actions if a.startswith("service") and "status" not in a]
    assert services == ["service dhclient forcestop vtnet0", "service netif restart vtnet0",
                        "service routing restart"]


def test_the_user_has_the_key_and_no_password(tmp_path):
    _, root, actions = _first_boot(tmp_path, EARLY)
    keys = root / "home/freebsd/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAC3Nz\n"
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert "pw useradd -n freebsd -m -d /home/freebsd -G wheel -s /bin/sh -c bhyve-snaptest" \
        in actions
    assert "pw usermod -n freebsd -h -" in actions, "no known password (pw(8) -h -)"


def test_an_existing_user_is_not_added_again_but_still_loses_its_password(tmp_path):
    users = tmp_path / "root/users"
    users.mkdir(parents=True)
    (users / "freebsd").write_text(
        "freebsd:$6$x:1001:1001::0:0:FreeBSD User:/home/freebsd:/bin/sh\n")
    _, _, actions = _first_boot(tmp_path, EARLY)
    assert not any(a.startswith("pw useradd") for a in actions)
    assert "pw usermod -n freebsd -h -" in actions


def test_password_logins_are_off_by_the_first_value_sshd_reads(tmp_path):
    _, root, _ = _first_boot(tmp_path, EARLY)
    lines = (root / "etc/ssh/sshd_config").read_text().splitlines()
    assert lines[:3] == ["PasswordAuthentication no", "KbdInteractiveAuthentication no",
                         "UseDNS no"]
    assert lines[3:] == IMAGE_SSHD_CONFIG.splitlines(), "the image's lines are kept, after"


def test_a_running_sshd_is_told_to_reread_its_config(tmp_path):
    _, _, actions = _first_boot(tmp_path, LATE, FREEBSD_SSHD_RUNNING="1")
    assert "service sshd reload" in actions


def test_the_resolver_fails_at_once_and_swap_stays_off(tmp_path):
    _, root, actions = _first_boot(tmp_path, EARLY)
    assert (root / "etc/resolv.conf").read_text() == \
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    fstab = (root / "etc/fstab").read_text().splitlines()
    assert fstab == [IMAGE_FSTAB.splitlines()[0], "#" + IMAGE_FSTAB.splitlines()[1]]
    assert "swapoff -a" in actions


def test_the_memory_directory_is_a_tmpfs_owned_by_the_user(tmp_path):
    _, root, actions = _first_boot(tmp_path, EARLY)
    target = f"{root}/var/snaptest-mem"
    assert f"mount -t tmpfs -o size=512m tmpfs {target}" in actions
    assert actions.index(f"mount -t tmpfs -o size=512m tmpfs {target}") < \
        actions.index(f"chown freebsd {target}")


def test_a_failed_step_is_named_in_the_status_and_the_exit_status(tmp_path):
    result, root, _ = _first_boot(tmp_path, EARLY, FREEBSD_MOUNT_FAILS="1")
    assert result.returncode != 0
    assert _status(root)["failed"] == \
        f" [mount -t tmpfs -o size=512m tmpfs {root}/var/snaptest-mem]"


def test_no_interface_with_the_mac_is_a_failure_and_the_name_is_used(tmp_path):
    result, root, _ = _first_boot(tmp_path, EARLY, FREEBSD_MAC="58:9c:fc:ff:ff:ff")
    assert result.returncode != 0
    assert _status(root)["failed"] == f" [no interface has MAC {MAC}]"
    assert (root / "etc/rc.conf.d/network").read_text() == \
        'ifconfig_vtnet0="inet 10.0.0.2/24"\n'


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml.CSafeLoader],
                         ids=["pyyaml", "libyaml"])
@pytest.mark.parametrize("setup", [SETUP, FirstBootSetup(
    hostname="a.b-c_d", user="snap", ssh_key="ssh-rsa AAAA+/=", mac_address=None,
    interface="em0", address_cidr="192.168.7.9/30", gateway="192.168.7.10",
    memory_dir="/m", memory_mib=1)], ids=["default", "other"])
def test_the_script_is_a_yaml_document_with_a_value(setup, loader):
    """nuageinit 072ca5df yaml.load()s every user-data (lyaml, on libyaml) and gives up
    when that yields nothing or fails: a comment line or a ': ' would stop it."""
    value = yaml.load(first_boot_script(setup), Loader=loader)
    assert isinstance(value, str) and value
