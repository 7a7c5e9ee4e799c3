"""The end of a config-drive guest's first boot: waited for, then checked, against a
scripted guest that answers as a FreeBSD guest would in each case."""

import pytest

from bhyve_snaptest.commands import CommandResult
from bhyve_snaptest.errors import GuestError
from bhyve_snaptest.firstboot import FIRSTBOOT_REBOOT, settle_first_boot
from bhyve_snaptest.images.firstboot_script import STATUS_FILE

GOOD = {"wait": 0, "reboot": "no", "tmpfs": "yes", "pwauth": "no", "swap": "0",
        "status": "stage=late\nfailed="}


class ScriptedGuest:
    """Answers each command the checks send by what it asks about."""

    def __init__(self, **answers: object) -> None:
        self.answers = {**GOOD, **answers}
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float = 60.0,
            idempotent: bool = False) -> CommandResult:
        self.commands.append(command)
        if command.startswith("timeout "):
            return CommandResult(command, int(self.answers["wait"]), "", "", 0.0)
        if command == f"cat {STATUS_FILE}":
            status = self.answers["status"]
            return CommandResult(command, 1 if status is None else 0, status or "", "", 0.0)
        key = ("reboot" if FIRSTBOOT_REBOOT in command else
               "tmpfs" if "(tmpfs" in command else
               "pwauth" if "passwordauthentication" in command else
               "swap" if "swapctl" in command else None)
        assert key is not None, f"unexpected guest command: {command}"
        return CommandResult(command, 0, f"{self.answers[key]}\n", "", 0.0)


def test_a_first_boot_that_did_what_the_drive_asked_passes():
    guest = ScriptedGuest()
    result = settle_first_boot(guest, "/var/snaptest-mem", 60)
    assert result.problems == []
    assert result.facts == {"stage": "late", "swap_devices": 0}
    assert "while [ -e /firstboot ]" in guest.commands[0], "the end of rc is waited for"


@pytest.mark.parametrize(("answer", "problem"), [
    ({"reboot": "yes"}, "/firstboot-reboot exists: /etc/rc reboots the guest"),
    ({"tmpfs": "no"}, "/var/snaptest-mem is not a tmpfs"),
    ({"pwauth": "yes"}, "the first PasswordAuthentication in /etc/ssh/sshd_config is 'yes'"),
    ({"pwauth": ""}, "the first PasswordAuthentication in /etc/ssh/sshd_config is 'missing'"),
    ({"status": None}, "the config drive's first-boot script did not run"),
    ({"status": "stage=early\nfailed= [mount -t tmpfs]"},
     "steps of the config drive's first-boot script failed: [mount -t tmpfs]"),
    ({"wait": 124}, "the first boot did not end within 60 s"),
])
def test_each_thing_the_first_boot_left_undone_is_named(answer, problem):
    result = settle_first_boot(ScriptedGuest(**answer), "/var/snaptest-mem", 60)
    assert any(problem in p for p in result.problems), result.problems


def test_swap_left_on_is_recorded():
    assert settle_first_boot(ScriptedGuest(swap="1"), "/m", 60).facts["swap_devices"] == 1


def test_a_failing_wait_is_an_error_not_a_pass():
    with pytest.raises(GuestError, match="waiting for the end of the first boot failed"):
        settle_first_boot(ScriptedGuest(wait=127), "/m", 60)
