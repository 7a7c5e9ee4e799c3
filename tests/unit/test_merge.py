"""bhyve-snaptest merge: shards of one run on several hosts give one results folder with the
test set of an unsharded run; colliding test folders are renamed and followed; missing
or duplicated shards are warnings; a folder without junit.xml is a usage error."""

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from bhyve_snaptest.cli import main
from bhyve_snaptest.errors import ExitStatus
from bhyve_snaptest.merge import DIFFERS, SourceSuite, agreed, shard_warnings
from bhyve_snaptest.report.model import FOLDER_PROPERTY, load_run
from bhyve_snaptest.shard import shard_of

pytest_plugins = ["pytester"]

SAMPLES = Path(__file__).parent / "samples" / "report"

INNER = """
    import pytest

    @pytest.mark.scenario
    @pytest.mark.parametrize("name", ["one", "two", "three"])
    def test_scenario(test_results, name):
        test_results.metrics["suspend_s"] = 1.0
        test_results.metrics["verdicts"] = {"copy": "PASS"}

    def test_a():
        pass

    def test_b():
        pass

    def test_c():
        assert False, "a failed test is merged like any other"

    def test_d():
        pass
"""
INNER_IDS = [f"test_inner.py::test_scenario[{n}]" for n in ("one", "two", "three")] + [
    f"test_inner.py::test_{n}" for n in "abcd"]


def _run(pytester, results, *options):
    """An inner run into ``results`` (which then holds ``latest``, as a host's does)."""
    return pytester.runpytest("-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.shard",
                              "--results-dir", str(results), "-o", "markers=scenario",
                              "-p", "no:cacheprovider", *options)


def _cases(folder):
    root = ET.parse(folder / "junit.xml").getroot()
    return [(case.get("classname"), case.get("name"),
             {p.get("name"): p.get("value") for p in case.iter("property")})
            for case in root.iter("testcase")]


def _ids(folder):
    return [(classname, name) for classname, name, _ in _cases(folder)]


def test_merged_shards_have_the_test_set_of_an_unsharded_run(pytester, monkeypatch,
                                                              tmp_path, capsys):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    # Both shards get tests, scenarios among them (the split is sha256: fixed).
    assert {shard_of(i, 2) for i in INNER_IDS[:3]} == {1, 2}
    _run(pytester, tmp_path / "whole").assert_outcomes(passed=6, failed=1)
    hosts = [tmp_path / "host1" / "results", tmp_path / "host2" / "results"]
    for index, results in enumerate(hosts, 1):
        _run(pytester, results, "--shard", f"{index}/2")

    merged = tmp_path / "merged"
    assert main(["merge", *map(str, hosts), "--output", str(merged)]) == ExitStatus.OK
    out, err = capsys.readouterr()
    assert "merged 2 runs, 7 test cases" in out and "warning" not in err

    whole = _ids(tmp_path / "whole" / "latest")
    shards = [_ids(results / "latest") for results in hosts]
    assert all(shards)
    assert sorted(shards[0] + shards[1]) == sorted(whole)  # each test in exactly one shard
    assert sorted(_ids(merged)) == sorted(whole)
    folders = [props[FOLDER_PROPERTY] for _, _, props in _cases(merged)
               if FOLDER_PROPERTY in props]
    assert len(folders) == 3
    assert all((merged / folder / "metrics.json").is_file() for folder in folders)
    # Read back as any run: node ids, outcomes, and each scenario on the page.
    run = load_run(merged)
    assert sorted(t.nodeid for t in run.tests) == sorted(INNER_IDS)
    assert [t.nodeid for t in run.failures] == ["test_inner.py::test_c"]
    page = (merged / "report.html").read_text()
    assert all(f'id="test-{folder}"' in page for folder in folders)
    suites = ET.parse(merged / "junit.xml").getroot().findall("testsuite")
    sources = {p.get("name"): p.get("value") for s in suites
               for p in s.findall("properties/property")}
    assert sources["shard"] in ("1/2", "2/2") and "merged.source" in sources


def test_a_missing_shard_is_a_warning(pytester, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    _run(pytester, tmp_path / "one", "--shard", "1/3")
    _run(pytester, tmp_path / "three", "--shard", "3/3")
    status = main(["merge", str(tmp_path / "one"), str(tmp_path / "three"),
                   "--output", str(tmp_path / "merged")])
    assert status == ExitStatus.OK
    assert "2 of 3 shards merged: 1/3, 3/3; missing 2/3" in capsys.readouterr().err


def test_shard_warnings():
    def suite(label, shard, prefix="qemu"):
        return SourceSuite(label, prefix, shard, frozenset())

    assert shard_warnings([suite("a", None), suite("b", None)]) == []
    assert shard_warnings([suite("a", "1/2"), suite("b", "2/2")]) == []
    # Two configurations, each complete: no duplicates across them.
    assert shard_warnings([suite("a", "1/2"), suite("b", "2/2"),
                           suite("c", "1/2", "bhyve-emulated-main"),
                           suite("d", "2/2", "bhyve-emulated-main")]) == []
    assert shard_warnings([suite("a", "1/2"), suite("b", "1/2"), suite("c", "2/2")]) == [
        "qemu: shard 1/2 merged 2 times: from a, b"]
    warnings = shard_warnings([suite("a", "3/3"), suite("b", None)])
    assert warnings[0].startswith("not a shard") and "b" in warnings[0]
    assert warnings[1] == "qemu: 1 of 3 shards merged: 3/3; missing 1/3, 2/3"


def test_colliding_folders_are_renamed_and_the_page_shows_both(tmp_path, capsys):
    """Two hosts that both ran the seed: both folders kept, each under its run's name."""
    merged = tmp_path / "merged"
    status = main(["merge", str(SAMPLES / "seed-passed"), str(SAMPLES / "seed-failed"),
                   "--output", str(merged)])
    assert status == ExitStatus.OK  # merged, though a merged test failed
    err = capsys.readouterr().err
    assert "1 test(s) ran in more than one run" in err
    seed = "test_busy_guest_survives_suspend_and_restore"
    folders = sorted(props[FOLDER_PROPERTY] for _, _, props in _cases(merged))
    assert folders == [f"seed-failed_{seed}", f"seed-passed_{seed}"]
    assert not (merged / seed).exists()
    for folder in folders:
        assert (merged / folder / "console.log").is_file()
    assert (merged / "provenance-seed-passed.json").is_file()
    assert (merged / "provenance-seed-failed.json").is_file()

    run = load_run(merged)
    assert sorted(t.outcome for t in run.tests) == ["failed", "passed"]
    assert all(t.timeline is not None and t.series.copy_bytes for t in run.tests)
    page = (merged / "report.html").read_text()
    for folder in folders:
        assert f'id="test-{folder}"' in page and f'href="{folder}/console.log"' in page
    assert page.count("<svg") >= 4  # each test's phases and its ping
    assert "Hypervisor: <strong>qemu</strong>" in page


def test_repeat_summaries_follow_the_renamed_folders(tmp_path):
    other = tmp_path / "host2-run"
    shutil.copytree(SAMPLES / "seed-repeat3", other)
    merged = tmp_path / "merged"
    assert main(["merge", str(SAMPLES / "seed-repeat3"), str(other),
                 "--output", str(merged)]) == ExitStatus.OK
    summary = json.loads((merged / "repeat-summary.json").read_text())
    assert len(summary) == 2 and all(key.endswith(("(seed-repeat3)", "(host2-run)"))
                                     for key in summary)
    for data in summary.values():
        assert data["runs"] == 3 and data["spread"]
        assert all((merged / folder / "metrics.json").is_file() for folder in data["outcomes"])
    page = (merged / "report.html").read_text()
    assert page.count("<h2>--repeat:") == 2


def test_kept_disks_stay_sparse(tmp_path):
    source = tmp_path / "run"
    shutil.copytree(SAMPLES / "seed-passed", source)
    disk = source / "test_busy_guest_survives_suspend_and_restore" / "scratch" / "disk.img"
    disk.parent.mkdir()
    with disk.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
        f.write(b"data")
    merged = tmp_path / "merged"
    assert main(["merge", str(source), "--output", str(merged)]) == ExitStatus.OK
    copy = merged / disk.relative_to(source)
    assert copy.stat().st_size == disk.stat().st_size
    assert copy.stat().st_blocks * 512 < 1024 * 1024
    assert copy.read_bytes()[:4] == b"data"


def test_a_folder_without_junit_is_a_usage_error(tmp_path, capsys):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    status = main(["merge", str(SAMPLES / "seed-passed"), str(empty),
                   "--output", str(tmp_path / "merged")])
    assert status == ExitStatus.USAGE_ERROR
    assert f"{empty} has no junit.xml" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()
    status = main(["merge", str(SAMPLES / "seed-passed"), "--output", str(empty)])
    assert status == ExitStatus.USAGE_ERROR  # never into an existing folder


def test_agreed_provenance_never_claims_one_hosts_value_for_all():
    a = {"host": {"uname": "Linux a"}, "hypervisor": {"label": "qemu", "binaries": [1]},
         "options": {"copy_size": "128M"}}
    b = {"host": {"uname": "Linux b"}, "hypervisor": {"label": "qemu", "binaries": [2]},
         "options": {}}
    assert agreed([a, b]) == {"host": {"uname": DIFFERS},
                              "hypervisor": {"label": "qemu", "binaries": [1, 2]},
                              "options": {"copy_size": DIFFERS}}
    assert agreed([a, a]) == a


def test_nothing_is_written_into_the_sources(tmp_path):
    source = tmp_path / "run"
    shutil.copytree(SAMPLES / "seed-failed", source)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    assert main(["merge", str(source), "--output", str(tmp_path / "m")]) == ExitStatus.OK
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
