"""procstat -s and procstat -C -f, as printed by procstat_cred.c and procstat_files.c."""


import pytest
from sample_text import sample

from bhyve_snaptest.bhyve.procstat import (
    SNAPSHOT_SOCKET_RIGHTS,
    OpenFile,
    ProcstatError,
    extra_rights,
    parse_procstat_cred,
    parse_procstat_files,
    socket_rights_problems,
)

SOCKET = "/var/run/bhyve/freebsd_guest"




def _by_fd(files):
    return {f.fd: f for f in files}


# -- procstat -s ------------------------------------------------------------------------------

def test_cred_with_header():
    bhyve, sshd = parse_procstat_cred(sample("procstat-cred.txt"))
    assert (bhyve.pid, bhyve.comm, bhyve.umask, bhyve.groups) == (1342, "bhyve", "022", (0, 5))
    assert bhyve.capability_mode
    assert (sshd.pid, sshd.comm, sshd.capability_mode) == (977, "sshd", False)


def test_cred_without_header():
    [bhyve] = parse_procstat_cred(sample("procstat-cred-noheader.txt"))
    assert bhyve.pid == 1342 and not bhyve.capability_mode


def test_cred_json():
    [bhyve] = parse_procstat_cred(sample("procstat-cred.json"))
    text = parse_procstat_cred(sample("procstat-cred.txt"))[0]
    assert bhyve == text


def test_cred_columns_by_position_not_width():
    # A COMM longer than its 16 columns shifts the rest; an unreadable umask prints "-".
    ids = "".join(f"{0:5d} " for _ in range(6))
    line = f"{7:5d} {'bhyve: long vm name':<16s} {ids}{'-':>5s} C     0"
    [cred] = parse_procstat_cred(line)
    assert (cred.comm, cred.umask, cred.capability_mode) == ("bhyve: long vm name", "-", True)


def test_cred_rejects_other_output():
    with pytest.raises(ProcstatError, match="not a procstat -s line"):
        parse_procstat_cred("  PID COMM FD\n 1342 bhyve 3 v rw------\n")


# -- procstat -C -f ---------------------------------------------------------------------------

def test_filessample():
    files = parse_procstat_files(sample("procstat-files-capsicum.txt"))
    assert len(files) == 15
    fds = _by_fd(files)
    assert fds["cwd"].name == "/root" and fds["cwd"].rights == frozenset()
    assert fds["text"].protocol == "-"
    assert fds[3].name == "/dev/vmm/freebsd_guest"
    assert fds[4].rights == {"ke", "kc"}
    assert fds[5].name == "-" and fds[5].flags == "rw---n--"


def test_name_with_spaces_survives():
    fds = _by_fd(parse_procstat_files(sample("procstat-files-capsicum.txt")))
    assert fds[8].name == "/vm/freebsd_guest disks/main.img"


def test_stream_socket_queues_are_not_part_of_the_name():
    socket = _by_fd(parse_procstat_files(sample("procstat-files-capsicum.txt")))[10]
    assert (socket.type, socket.protocol, socket.sendq, socket.recvq, socket.name) == (
        "s", "UDS", 0, 0, SOCKET)
    assert socket.rights == {"rd", "wr", "at", "gs", "re", "sd"}


def test_socket_procstat_could_not_inspect_has_empty_name():
    socket = _by_fd(parse_procstat_files(sample("procstat-files-capsicum.txt")))[11]
    assert (socket.protocol, socket.name, socket.sendq) == ("", "", None)


def test_older_procstat_without_queues():
    line = f" 1342 bhyve               10 s rw------ rd,wr,at,gs,re,sd UDS {SOCKET}"
    [socket] = parse_procstat_files(line)
    assert (socket.name, socket.sendq) == (SOCKET, None)


def test_files_json():
    files = _by_fd(parse_procstat_files(sample("procstat-files.json")))
    text = _by_fd(parse_procstat_files(sample("procstat-files-capsicum.txt")))
    for fd in ("cwd", 3, 10):
        assert files[fd] == text[fd]


def test_without_capabilities_column_says_to_add_c():
    header = "  PID COMM                FD T V FLAGS    REF  OFFSET PRO NAME\n"
    row = " 1342 bhyve                3 v c rw------   1       0 -   /dev/vmm/freebsd_guest\n"
    with pytest.raises(ProcstatError, match="-C"):
        parse_procstat_files(header + row)
    with pytest.raises(ProcstatError, match="-C"):
        parse_procstat_files(row)  # procstat -h -f


def test_garbage_is_refused():
    with pytest.raises(ProcstatError, match="not a procstat -C -f line"):
        parse_procstat_files("procstat: procstat_getfiles: Operation not permitted\n")


# -- the snapshot socket's rights -------------------------------------------------------------

def test_expected_rights_are_what_upstream_sets():
    # cap_rights_init(CAP_ACCEPT, CAP_READ, CAP_RECV, CAP_WRITE, CAP_SEND, CAP_GETSOCKOPT)
    # as procstat names them; the sample's socket carries exactly that set.
    socket = _by_fd(parse_procstat_files(sample("procstat-files-capsicum.txt")))[10]
    assert socket.rights == SNAPSHOT_SOCKET_RIGHTS


def test_limited_socket_passes_with_nothing_extra():
    files = parse_procstat_files(sample("procstat-files-capsicum.txt"))
    assert socket_rights_problems(files, SOCKET) == []
    assert extra_rights(files, SOCKET) == frozenset()


def test_unlimited_socket_passes_but_shows_its_extra_rights():
    files = parse_procstat_files(sample("procstat-files-nocapsicum.txt"))
    assert socket_rights_problems(files, SOCKET) == []
    assert {"bd", "co", "ln", "ss", "sh"} <= extra_rights(files, SOCKET)
    assert not extra_rights(files, SOCKET) & SNAPSHOT_SOCKET_RIGHTS


def test_missing_socket():
    files = parse_procstat_files(sample("procstat-files-capsicum.txt"))
    [problem] = socket_rights_problems(files, "/var/run/bhyve/other")
    assert "no socket /var/run/bhyve/other" in problem and "BHYVE_SNAPSHOT" in problem


def test_socket_lacking_accept():
    socket = OpenFile(pid=1, comm="bhyve", fd=10, type="s", flags="rw------",
                      rights=frozenset({"rd", "wr", "re", "sd", "gs"}), protocol="UDS",
                      name=SOCKET)
    [problem] = socket_rights_problems([socket], SOCKET)
    assert "lacks rights at" in problem


def test_a_file_with_the_socket_name_is_not_the_socket():
    impostor = OpenFile(pid=1, comm="bhyve", fd=3, type="v", flags="rw------",
                        rights=SNAPSHOT_SOCKET_RIGHTS, protocol="-", name=SOCKET)
    assert socket_rights_problems([impostor], SOCKET) != []
