"""The Capsicum checks of review D34547, judged from procstat samples (no FreeBSD here).

The samples are the main branch's bhyve in capability mode and one built WITHOUT_CAPSICUM
(tests/unit/samples); each case edits the first into the bhyve it models.
"""

from pathlib import Path

import pytest
from sample_text import sample

from bhyve_snaptest.bhyve.procstat import parse_procstat_files
from bhyve_snaptest.capsicum import FAIL, FINDING, NOT_APPLICABLE, PASS, SandboxContext, judge

CONTEXT = SandboxContext(socket=Path("/var/run/bhyve/freebsd_guest"),
                         guest_memory=Path("/dev/vmm/freebsd_guest"),
                         disks=(Path("/vm/freebsd_guest disks/main.img"),))
CHECKPOINT = (Path("/vm/ckp/suspend.ckp"), Path("/vm/ckp/suspend.ckp.kern"),
              Path("/vm/ckp/suspend.ckp.meta"))


def _files(*extra_lines: str, replace: tuple[str, str] | None = None):
    text = sample("procstat-files-capsicum.txt")
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    return parse_procstat_files(text + "".join(f"\n{line}" for line in extra_lines))


def _statuses(report):
    return {check.name: check.status for check in report.checks}


def test_mains_bhyve_in_capability_mode_passes_every_check():
    report = judge(1342, True, _files(), CONTEXT)
    assert _statuses(report) == {
        "capability mode": PASS, "checkpoint files closed": NOT_APPLICABLE,
        "snapshot socket usable": PASS, "snapshot socket limited": PASS,
        "disk descriptors": PASS, "guest memory descriptor": PASS,
        "checkpoint directory held": NOT_APPLICABLE, "casper channel closed": PASS}
    assert report.failures("yes") == []


def test_a_bhyve_not_in_capability_mode_fails_yes_and_no_judges_nothing_else():
    report = judge(1342, False, _files(), CONTEXT)
    statuses = _statuses(report)
    assert statuses.pop("capability mode") == FAIL
    assert statuses.pop("checkpoint files closed") == NOT_APPLICABLE
    assert set(statuses.values()) == {NOT_APPLICABLE}, "rights say nothing without cap mode"
    assert report.failures("yes") and "cap_enter" in report.failures("yes")[0]
    assert report.failures("auto") == [], "the Capsicum scenario makes it an expected failure"
    assert report.failures("no") == []
    assert judge(1342, True, _files(), CONTEXT).failures("no") != []


def test_a_snapshot_socket_with_extra_rights_is_a_finding_that_fails_yes_only():
    files = _files(replace=("rd,wr,at,gs,re,sd UDS", "rd,wr,at,gs,re,sd,cr UDS"))
    report = judge(1342, True, files, CONTEXT)
    assert _statuses(report)["snapshot socket limited"] == FINDING
    assert report.failures("auto") == []
    assert report.failures("yes") == ["snapshot socket limited: /var/run/bhyve/freebsd_guest "
                                      "also has cr (snapshot.c init_checkpoint_thread(): "
                                      "CAP_ACCEPT, CAP_READ, CAP_RECV, CAP_WRITE, CAP_SEND, "
                                      "CAP_GETSOCKOPT)"]


def test_a_checkpoint_file_left_open_after_a_restore_fails():
    leftover = (" 1342 bhyve               12 v r-------          rd,se,fs,prd,re -   "
                "/vm/ckp/suspend.ckp.kern")
    report = judge(1342, True, _files(leftover),
                   SandboxContext(**{**CONTEXT.__dict__, "closed": CHECKPOINT}))
    [check] = [c for c in report.checks if c.name == "checkpoint files closed"]
    assert (check.status, check.detail) == (FAIL, "still open: fd 12 /vm/ckp/suspend.ckp.kern")
    assert report.failures("auto") != []
    closed = judge(1342, True, _files(),
                   SandboxContext(**{**CONTEXT.__dict__, "closed": CHECKPOINT}))
    assert _statuses(closed)["checkpoint files closed"] == PASS


@pytest.mark.parametrize(("line", "status"), [
    (None, FAIL),
    (" 1342 bhyve               12 v r-------       rd,se,fs,cr,lo,re -   /vm/ckp", PASS),
    (" 1342 bhyve               12 v r------- rd,wr,se,fe,cr,lo,re,sd -   /vm/ckp", FINDING),
], ids=["missing", "limited", "every-right"])
def test_the_checkpoint_directory_descriptor_with_minus_t(line, status):
    context = SandboxContext(**{**CONTEXT.__dict__, "checkpoint_dir": Path("/vm/ckp")})
    files = _files(line) if line else _files()
    assert _statuses(judge(1342, True, files, context))["checkpoint directory held"] == status


def test_a_disk_or_guest_memory_descriptor_beyond_upstreams_limit_is_a_finding():
    files = _files(replace=("rd,wr,se,mm,io,prd,pwr,mmr,mmw,mrw,re,sd -   /dev/vmm",
                            "rd,wr,se,mm,io,prd,pwr,mmr,mmw,mrw,re,sd,fe -   /dev/vmm"))
    assert _statuses(judge(1342, True, files, CONTEXT))["guest memory descriptor"] == FINDING


def test_an_unnamed_unix_socket_is_reported_as_a_possible_casper_channel():
    casper = " 1342 bhyve               13 s rw------              rd,wr,re,sd UDS 0 0 "
    report = judge(1342, True, _files(casper), CONTEXT)
    [check] = [c for c in report.checks if c.name == "casper channel closed"]
    assert (check.status, check.detail.split(":")[0]) == (FINDING, "unnamed UNIX socket(s) "
                                                                   "open (fd 13)")
