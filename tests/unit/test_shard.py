"""--shard I/N: a stable split by node id, deselection (not skips), --repeat's runs kept in
one shard, the shard as a JUnit property, and bad values as usage errors with a JUnit file."""

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.junit import USAGE_CLASSNAME
from bhyve_snaptest.shard import Shard, parse_shard, shard_of

pytest_plugins = ["pytester"]


def test_parse_shard():
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard(" 1 / 1 ").label == "1/1"


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "2", "-1/3", "1/2/3", ""])
def test_bad_shards_name_the_fix(text):
    with pytest.raises(ConfigError, match=r"e\.g\. --shard \d/\d"):
        parse_shard(text)


def test_the_split_is_pinned_and_independent_of_the_process():
    """Every host must compute the same split: sha256, not Python's salted hash()."""
    ids = ["test_inner.py::test_a", "test_inner.py::test_scenario[one]",
           "tests/scenarios/test_suspend_restore.py::"
           "test_busy_guest_survives_suspend_and_restore"]
    assert [shard_of(i, 2) for i in ids] == [1, 2, 2]
    assert [shard_of(i, 3) for i in ids] == [3, 1, 2]
    code = f"from bhyve_snaptest.shard import shard_of; print([shard_of(i, 3) for i in {ids!r}])"
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert done.stdout.strip() == "[3, 1, 2]"


def test_every_test_is_in_exactly_one_shard():
    ids = [f"tests/test_{n}.py::test_{m}" for n in range(20) for m in range(5)]
    for count in (1, 2, 3, 7):
        shards = [Shard(index, count) for index in range(1, count + 1)]
        assert all(sum(s.holds(i) for s in shards) == 1 for i in ids)
        if count > 1:  # a hundred ids spread over every shard
            assert all(any(s.holds(i) for i in ids) for s in shards)


INNER = """
    import pytest

    @pytest.mark.scenario
    @pytest.mark.parametrize("name", ["one", "two", "three"])
    def test_scenario(test_results, name):
        test_results.metrics["suspend_s"] = 1.0

    def test_a():
        pass

    def test_b():
        pass
"""


def _run(pytester, tmp_path, name, *options):
    results = tmp_path / name
    outcome = pytester.runpytest("-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.repeat",
                                 "-p", "bhyve_snaptest.shard", "--results-dir", str(results),
                                 "-o", "markers=scenario", "-p", "no:cacheprovider",
                                 *options)
    return outcome, results / "latest" / "junit.xml"


def _suite_property(junit, name):
    root = ET.parse(junit).getroot()
    return {p.get("name"): p.get("value")
            for p in root.iter("testsuite")
            for p in p.findall("properties/property")}.get(name)


def test_other_shards_are_deselected_and_repeats_stay_together(pytester, monkeypatch,
                                                                tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    # Shard 1/2: test_a, test_b and test_scenario[three]; 2/2: [one] and [two].
    first, junit = _run(pytester, tmp_path, "first", "--shard", "1/2", "--repeat", "2")
    first.assert_outcomes(passed=4, deselected=2)
    first.stdout.fnmatch_lines(["*shard 1/2: 3 test(s) here, 2 deselected*"])
    names = sorted(c.get("name") for c in ET.parse(junit).getroot().iter("testcase"))
    assert names == ["test_a", "test_b", "test_scenario[three]", "test_scenario[three]"]
    assert _suite_property(junit, "shard") == "1/2"

    second, junit = _run(pytester, tmp_path, "second", "--shard", "2/2")
    second.assert_outcomes(passed=2, deselected=3)
    assert _suite_property(junit, "shard") == "2/2"

    whole, junit = _run(pytester, tmp_path, "whole")
    whole.assert_outcomes(passed=5)
    assert _suite_property(junit, "shard") is None


@pytest.mark.parametrize("value", ["0/3", "4/3", "x"])
def test_a_bad_shard_is_a_usage_error_with_a_junit_file(pytester, monkeypatch, tmp_path,
                                                        value):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    outcome, junit = _run(pytester, tmp_path, "bad", "--shard", value)
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    outcome.stderr.fnmatch_lines([f"*--shard*{value}*e.g. --shard*"])
    [case] = ET.parse(junit).getroot().iter("testcase")
    assert case.get("classname") == USAGE_CLASSNAME
    assert value in case.find("error").get("message")


def test_an_empty_shard_still_says_which_it_was(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    outcome, junit = _run(pytester, tmp_path, "empty", "--shard", "2/2", "-k", "test_a")
    assert outcome.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert _suite_property(junit, "shard") == "2/2"


def test_the_shard_reaches_junit_under_xdist(tmp_path):
    """Workers have no JUnit writer: the controller records the shard, and the workers
    deselect alike (node ids relative to the rootdir, which the ini file fixes, as the
    checkout's pyproject.toml does on every host)."""
    (tmp_path / "tox.ini").write_text("[pytest]\nmarkers = scenario\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER).replace(
        "test_results, ", "").replace('test_results.metrics["suspend_s"] = 1.0', "pass"))
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "bhyve_snaptest.plugin",
         "--results-dir", str(results), "-p", "no:cacheprovider", "-n", "2",
         "--shard", "2/2"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "BHYVE_SNAPTEST_STATE": str(tmp_path / "state")}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    junit = results / "latest" / "junit.xml"
    assert _suite_property(junit, "shard") == "2/2"
    assert sorted(c.get("name") for c in ET.parse(junit).getroot().iter("testcase")) == [
        "test_scenario[one]", "test_scenario[two]"]
