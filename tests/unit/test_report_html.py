"""report.html built from recorded results (tests/unit/samples/report: real QEMU runs of
the seed scenario, once passed, once failed, once with --repeat 3), read back with an HTML
parser; and the series the page draws, parsed from the workloads' files."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bhyve_snaptest import cli
from bhyve_snaptest.errors import ExitStatus
from bhyve_snaptest.report.model import (
    PingGap,
    PingReply,
    WorkloadSeries,
    _nodeid,
    hypervisor_label,
    load_run,
    ping_replies,
)
from bhyve_snaptest.report.page import REPORT_FILE, render, write_report
from bhyve_snaptest.report.terminal import metrics_table

SAMPLES = Path(__file__).parent / "samples" / "report"
SEED = "tests/scenarios/test_suspend_restore.py::test_busy_guest_survives_suspend_and_restore"


class Page(HTMLParser):
    """What a reader of the page meets: headings, elements by id, tables' rows, plots."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.texts: dict[str, list[str]] = {}
        self.headings: list[str] = []
        self.svgs = 0
        self.rows: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.scripts = 0
        self._heading: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.stack.append((tag, attributes.get("id")))
        if tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
        elif tag in ("h1", "h2"):
            self._heading = []
        elif tag == "tr":
            self.rows.setdefault(self._table(), []).append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[self._table()][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, element_id in self.stack:
            if element_id:
                self.texts.setdefault(element_id, []).append(data)
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)

    def _table(self) -> str:
        return next((i for tag, i in reversed(self.stack) if tag == "table"), "") or ""

    def text(self, element_id: str) -> str:
        return " ".join("".join(self.texts.get(element_id, [])).split())


@pytest.fixture
def sample(tmp_path):
    """A copy of a recorded run's folder (the page is written into it)."""
    def copy(name: str) -> Path:
        return Path(shutil.copytree(SAMPLES / name, tmp_path / name))
    return copy


def test_a_passed_seed_run_shows_its_verdict_metrics_plots_and_files(sample):
    folder = sample("seed-passed")
    page = Page(write_report(load_run(folder)).read_text())
    assert page.scripts == 0
    assert "failures" not in page.texts
    assert page.text("verdict") == "1 passed"
    header, row = page.rows["summary"]
    assert header[:5] == ["test", "verdict", "hypervisor", "workloads", "boot"]
    cells = dict(zip(header, row, strict=True))
    assert cells["verdict"] == "passed" and cells["hypervisor"] == "qemu"
    assert cells["workloads"] == "copy PASSmemory PASSping PASS"  # one per line (<br>)
    assert cells["MB"] == "242" and cells["boot"] == "11.98" and cells["suspend"] == "0.45"
    assert page.svgs == 2  # phases with the workloads; the ping
    assert f"{SEED} passed" in page.headings
    assert "test_busy_guest_survives_suspend_and_restore/console.log" in page.links
    assert "test_busy_guest_survives_suspend_and_restore/workloads/copy/progress" \
        in page.links
    assert page.text("hypervisor") == "Hypervisor: qemu"


def test_a_failed_run_says_why_at_the_top(sample):
    folder = sample("seed-failed")
    text = write_report(load_run(folder)).read_text()
    page = Page(text)
    assert page.headings[:2] == [f"bhyve-snaptest run {folder.name}", "Summary"]
    assert text.index('id="failures"') < text.index("<h2>Summary</h2>")
    assert "1 test(s) failed" in page.text("failures")
    assert "the copy had finished before the suspend" in page.text("failures")
    header, row = page.rows["summary"]
    assert dict(zip(header, row, strict=True))["verdict"] == "failed"
    assert f"{SEED} failed" in page.headings


def test_a_repeat_run_shows_the_pass_count_and_each_phase_spread(sample):
    folder = sample("seed-repeat3")
    page = Page(write_report(load_run(folder)).read_text())
    assert page.text("repeat-1").startswith(f"--repeat: {SEED} 3 of 3 runs passed")
    assert len(page.rows["summary"]) == 1 + 3
    assert page.svgs == 3 * 2 + 1  # each run's two plots and the distributions


def test_the_terminal_table_lists_every_scenario_with_its_key_metrics(sample):
    lines = metrics_table(load_run(sample("seed-repeat3")))
    assert lines[0].split() == ["verdict", "boot", "suspend", "MB", "restore", "ssh",
                                "done", "total", "test"]
    assert len(lines) == 4
    assert all(line.split()[0] == "PASSED" for line in lines[1:])


def test_the_command_rebuilds_a_page_from_a_copied_folder(sample, capsys):
    folder = sample("seed-passed")
    assert cli.main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / REPORT_FILE)
    assert (folder / REPORT_FILE).stat().st_size > 10_000


def test_the_command_refuses_a_folder_without_results(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == ExitStatus.USAGE_ERROR
    assert "has no junit.xml: pass a run's results folder" in capsys.readouterr().err


def test_busybox_and_freebsd_ping_replies_are_read_alike():
    text = ("PING 198.18.0.1 (198.18.0.1): 56 data bytes\n"
            "64 bytes from 198.18.0.1: seq=0 ttl=64 time=8.739 ms\n"
            "64 bytes from 10.0.0.1: icmp_seq=3 ttl=64 time=0.045 ms\n"
            "64 bytes from 10.0.0.1: icmp_seq=4 ttl=64 time=1\n")  # cut short: skipped
    replies = ping_replies(text)
    assert [(r.seq, r.rtt_ms) for r in replies] == [(0, 8.739), (3, 0.045)]


def test_the_hypervisor_is_named_as_emulated_or_with_its_freebsd_release():
    emulated = {"hypervisor": {"driver": "bhyve",
                               "label": "bhyve (emulated over QEMU, personality main)"},
                "host": {"freebsd_version": "not applicable: not a FreeBSD host"}}
    assert hypervisor_label(emulated) == "bhyve (emulated over QEMU, personality main)"
    real = {"hypervisor": {"driver": "bhyve", "label": "bhyve"},
            "host": {"freebsd_version": "14.3-RELEASE-p2\n14.3-RELEASE-p3\n"}}
    assert hypervisor_label(real) == "bhyve on FreeBSD 14.3-RELEASE-p2 14.3-RELEASE-p3"


def test_gaps_are_the_sequence_numbers_without_a_reply():
    assert PingGap(2, 6).missing == 3
    series = WorkloadSeries(ping=[PingReply(s, 0.5) for s in (0, 1, 2, 6, 7)],
                            ping_restore_seqs=[2, 7])
    assert series.ping_gaps() == [PingGap(2, 6)]
    assert series.gap_across(2) == PingGap(2, 6)
    assert series.gap_across(7) is None  # nothing after the last restore's mark
    assert "across suspend 1 (restore announced after seq 2): 0 without a reply between " \
        "seq 2 and 3" in render(load_run(SAMPLES / "seed-passed"))


def test_junit_names_become_node_ids_again():
    case = ET.fromstring('<testcase classname="tests.unit.test_x.TestY" name="test_z[a]"/>')
    assert _nodeid(case, "") == "tests/unit/test_x.py::TestY::test_z[a]"
    case = ET.fromstring('<testcase classname="tests.scenarios.test_suspend_restore" '
                         'name="test_busy_guest_survives_suspend_and_restore"/>')
    assert _nodeid(case, "") == SEED
    # The run's prefix (bhyve_snaptest.junit: hypervisor and configuration) is not the module's.
    case = ET.fromstring('<testcase classname="bhyve-14_3-RELEASE-nvme.tests.scenarios.'
                         'test_suspend_restore" name="test_busy_guest_survives_suspend_and_'
                         'restore"/>')
    assert _nodeid(case, "bhyve-14_3-RELEASE-nvme") == SEED
