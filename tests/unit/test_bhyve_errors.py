"""Exit statuses and messages of bhyve and bhyvectl become sentences naming cause and fix."""


import pytest
from sample_text import sample

from bhyve_snaptest.bhyve.errors import (
    checkpoint_failure_in,
    errno_text,
    explain_bhyve_exit,
    explain_bhyvectl_exit,
)

VM = "freebsd_guest"




def test_errno_numbers_are_freebsds():
    assert errno_text(61) == "ECONNREFUSED (Connection refused)"
    assert errno_text(2) == "ENOENT (No such file or directory)"
    assert errno_text(111) == "errno 111"  # Linux's ECONNREFUSED means nothing on FreeBSD


# -- bhyvectl ---------------------------------------------------------------------------------

def test_no_socket():
    message = explain_bhyvectl_exit(2, "connect() failed: No such file or directory\n", VM)
    assert f"no snapshot socket /var/run/bhyve/{VM}" in message
    assert "not running" in message
    assert "BHYVE_SNAPSHOT" in message


def test_socket_in_another_run_dir():
    message = explain_bhyvectl_exit(2, "connect() failed: No such file or directory\n", VM,
                                    run_dir="/tmp/run/")
    assert f"/tmp/run/{VM}" in message


def test_stale_socket():
    message = explain_bhyvectl_exit(61, "connect() failed: Connection refused\n", VM)
    assert "stale socket" in message and "not running" in message


def test_linux_numbering_is_not_assumed():
    message = explain_bhyvectl_exit(111, "connect() failed: Connection refused\n", VM)
    assert "stale" not in message
    assert "errno 111" in message


def test_datagram_socket_of_an_older_bhyve():
    message = explain_bhyvectl_exit(41, "connect() failed: Protocol wrong type for socket\n",
                                    VM)
    assert "older bhyve" in message


@pytest.mark.parametrize("exitcode", [1, 13])
def test_connect_needs_root(exitcode):
    assert "as root" in explain_bhyvectl_exit(exitcode, "connect() failed: Permission denied",
                                              VM)


def test_request_cut_off():
    message = explain_bhyvectl_exit(32, "nvlist_send() failed: Broken pipe\n", VM)
    assert "closed it before the request was sent" in message


def test_no_socket_descriptors():
    message = explain_bhyvectl_exit(24, "Error creating bhyvectl socket: Too many open files",
                                    VM)
    assert "could not create a socket" in message and "descriptors" in message


def test_vm_missing_from_dev_vmm():
    stderr = f"vm_open: {VM} could not be opened: No such file or directory\n"
    message = explain_bhyvectl_exit(1, stderr, VM)
    assert f"/dev/vmm/{VM}" in message and "kldload vmm" in message


def test_vm_open_not_permitted():
    stderr = f"vm_open: {VM} could not be opened: Operation not permitted\n"
    assert "as root" in explain_bhyvectl_exit(1, stderr, VM)


def test_bhyvectl_without_snapshot_support():
    message = explain_bhyvectl_exit(1, sample("bhyvectl-usage-main-nosnapshot.txt"), VM)
    assert "no --suspend" in message and "WITH_BHYVE_SNAPSHOT=yes" in message
    assert "--suspend=x" in message


def test_usage_without_complaint_means_conflicting_or_missing_options():
    message = explain_bhyvectl_exit(1, sample("bhyvectl-usage-main.txt"), VM)
    assert "both given" in message and "--vm" in message


def test_bhyvectl_without_rundir():
    stderr = "bhyvectl: unrecognized option `--rundir=/tmp/x'\n" + sample(
        "bhyvectl-usage-main.txt")
    assert "no --rundir" in explain_bhyvectl_exit(1, stderr, VM)


@pytest.mark.parametrize(("exitcode", "reason"), [
    (2, "does not exist"),
    (20, "not a directory"),
    (13, "no permission"),
])
def test_silent_failure_is_the_checkpoint_directory(exitcode, reason):
    message = explain_bhyvectl_exit(exitcode, "", VM)
    assert reason in message
    assert "its own working directory" in message


def test_failed_vm_operation_exits_255():
    assert "errno = N" in explain_bhyvectl_exit(255, "", VM)


def test_success_is_only_a_sent_request():
    assert "no reply" in explain_bhyvectl_exit(0, "", VM)


def test_unknown_message_is_passed_on():
    assert "something odd" in explain_bhyvectl_exit(5, "warning\nsomething odd\n", VM)


# -- bhyve exit status ------------------------------------------------------------------------

def test_exit_0_is_reboot_or_suspend():
    message = explain_bhyve_exit(0, None, "")
    assert "rebooted" in message and "--suspend" in message and "/dev/vmm" in message


@pytest.mark.parametrize(("output", "expected"), [
    ("bhyve: illegal option -- r\n" + "Usage: bhyve [-aCDeHhPSuWwxY]\n", "BHYVE_SNAPSHOT"),
    ("bhyve: illegal option -- t\n" + "Usage: bhyve [-aCDeHhPSuWwxY]\n", "D34547"),
    ("bhyve: option requires an argument -- m\nUsage: bhyve [-aCDeHhPSuWwxY]\n", "-m lacks"),
    ("Usage: bhyve [-aCDeHhPSuWwxY]\n", "options must precede the VM name"),
])
def test_exit_1_usage(output, expected):
    assert expected in explain_bhyve_exit(1, None, output)


@pytest.mark.parametrize(("output", "expected"), [
    ("Failed to open restore file: No such file or directory\nFailed to load guest RAM "
     "file.\nFailed to read checkpoint info from file: 'ck'.\n",
     "memory file cannot be opened (No such file or directory)"),
    ("Restore file is empty.\nFailed to load guest RAM file.\n", "never completed"),
    ("Failed to parse metadata file: 'ck.meta'\n", "FILE.meta is missing or is not valid"),
    ("Restoring vm mem...\r\nvm_snapshot_mem: mem size mismatch: 268435456 vs 134217728\r\n"
     "Failed to restore VM memory.\n", "truncated"),
    ("Restoring pci devs...\r\nFailed to lookup dev: virtio-blk\r\n"
     "Failed to restore PCI device state.\n", "same -s devices"),
    ("Invalid guest vCPUs (0)\n", "ncpus"),
    ("Failed to restore dev: ahci-hd 22\n", "device ahci-hd rejected its saved state"),
])
def test_exit_1_restore_failures(output, expected):
    message = explain_bhyve_exit(1, None, output)
    assert message.startswith("restore failed")
    assert expected in message


def test_exit_1_without_clues_is_power_off():
    message = explain_bhyve_exit(1, None, "login: \n")
    assert "powered off" in message


@pytest.mark.parametrize(("exitcode", "expected"), [
    (2, "halted"),
    (3, "triple-faulted"),
    (100, "does not know"),
    (4, "Unable to setup memory (12)"),
    (42, "exited 42"),
])
def test_simple_statuses(exitcode, expected):
    assert expected in explain_bhyve_exit(exitcode, None, "Unable to setup memory (12)\n")


def test_ex_usage():
    message = explain_bhyve_exit(64, None, "bhyve: invalid memsize '256X'\n")
    assert "EX_USAGE" in message and "invalid memsize '256X'" in message


def test_ex_dataerr_is_a_version_mismatch():
    message = explain_bhyve_exit(65, None, "bhyve: Cannot find kern struct vhpet\n")
    assert "vhpet" in message and "different bhyve version" in message
    message = explain_bhyve_exit(65, None, "bhyve: Failed to restore vlapic: Invalid argument\n")
    assert "rejected saved state vlapic (Invalid argument)" in message


def test_missing_run_directory():
    output = ('Failed to bind socket "/var/run/bhyve/freebsd_guest": No such file or '
              "directory\n\nbhyve: Failed to start checkpoint thread\n")
    message = explain_bhyve_exit(71, None, output)
    assert "mkdir -p /var/run/bhyve" in message and "No such file or directory" in message


def test_other_os_errors():
    assert "Capsicum" in explain_bhyve_exit(71, None, "bhyve: cap_enter() failed\n")
    assert "EX_OSERR" in explain_bhyve_exit(71, None, "bhyve: something new\n")


@pytest.mark.parametrize(("signal", "expected"), [
    (6, "VMEXIT_ABORT"),
    (9, "killed"),
    (10, "crashed"),
    (15, "terminated"),
    (30, "signal 30"),
])
def test_signals(signal, expected):
    assert expected in explain_bhyve_exit(None, signal, "")


def test_still_running():
    assert "not exited" in explain_bhyve_exit(None, None, "")


# -- failed checkpoint in bhyve's output ------------------------------------------------------

def test_clean_output_has_no_failure():
    assert checkpoint_failure_in("Pausing pci devs...\r\nlogin: root\n") is None


@pytest.mark.parametrize(("output", "expected"), [
    ("Failed to open kernel data snapshot file.: Permission denied\n",
     "could not create FILE.kern (Permission denied)"),
    ("Failed to create checkpoint file: Read-only file system\n", "could not create FILE "),
    ("Failed to open vm metadata snapshot file.: No space left on device\n", "FILE.meta"),
    ("Could not pause devices\r\n", "refused to pause"),
    ("Could not write guest memory to file: No space left on device\n",
     "No space left on device"),
    ("vm_save_kern_struct: Failed to snapshot struct vhpet\r\n", "options BHYVE_SNAPSHOT"),
    ("Filename exceeds maximum length.\n", "too long"),
])
def test_checkpoint_failures(output, expected):
    assert expected in checkpoint_failure_in(output)


def test_most_specific_cause_wins():
    output = "Failed to snapshot hostbridge; ret=45\r\nFailed to snapshot device state.\n"
    message = checkpoint_failure_in(output)
    assert "hostbridge" in message and "no snapshot support" in message
    assert "[bhyve: Failed to snapshot hostbridge; ret=45]" in message


def test_device_failure_with_other_errno():
    assert "snapshot buffer" in checkpoint_failure_in("Failed to snapshot lpc; ret=7\n")
    assert "EIO" in checkpoint_failure_in("Failed to snapshot lpc; ret=5\n")
    assert "errno 99" in checkpoint_failure_in("Failed to snapshot lpc; ret=99\n")


def test_a_hostbridge_without_snapshot_support_is_named_with_the_fix():
    explained = checkpoint_failure_in("Failed to snapshot hostbridge@pci.0.0.0; ret=45\n"
                                      "Failed to snapshot device state.\n")
    assert "hostbridge has no snapshot callback" in explained
    assert "pci_de_snapshot" in explained
