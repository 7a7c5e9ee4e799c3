"""Expected failures on record (bhyve_snaptest.expected): a listed failure is XFAIL, a listed pass
fails the run and is named, a stale entry is reported, a bad file is a usage error."""

import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bhyve_snaptest import REPO_ROOT
from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.expected import (
    DEFAULT_FILE,
    Entry,
    RunIdentity,
    load,
    narrowed_modules,
    run_identity,
    stale_entries,
    wildcard_match,
)

pytest_plugins = ["pytester"]

INNER = """
    import pytest

    @pytest.mark.parametrize("disk", ["ahci-hd", "nvme"])
    def test_seed(disk):
        assert disk

    def test_passes():
        pass

    def test_fails():
        assert False, "broken"
"""
LINK = "https://example.org/bug/1"


def _entry(test, hypervisor="qemu", reason="known to fail", **extra):
    lines = [f'test = "{test}"', f'hypervisor = "{hypervisor}"', f'reason = "{reason}"',
             f'link = "{LINK}"'] + [f'{key} = "{value}"' for key, value in extra.items()]
    return "[[xfail]]\n" + "\n".join(lines) + "\n"


def _run(pytester, monkeypatch, tmp_path, entries, *options, inner=INNER, run=None):
    """An inner run of INNER with ``entries`` as its expected-failures file; its outcome and
    its JUnit file's root. ``run`` is pytester's runpytest or runpytest_subprocess."""
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=inner)
    listed = pytester.path / "expected.toml"
    listed.write_text("\n".join(entries))
    # Two runs in one second need two folders; under pytester's folder, so that an xdist
    # worker, which finds its rootdir among all the paths on the command line, finds it.
    folder = Path(tempfile.mkdtemp(dir=pytester.path))
    junit = folder / "junit.xml"
    outcome = (run or pytester.runpytest)(
        "-p", "bhyve_snaptest.plugin", "--expected-failures", str(listed),
        "--results-dir", str(folder / "results"), "--junitxml", str(junit),
        "-o", "markers=scenario", "-p", "no:cacheprovider", "-rA", *options)
    root = ET.parse(junit).getroot() if junit.exists() else None
    return outcome, root


def _case(root, name):
    return next(case for case in root.iter("testcase") if case.get("name") == name)


def test_a_listed_failure_is_xfail_with_its_reason_and_link_in_junit(pytester, monkeypatch,
                                                                      tmp_path):
    outcome, root = _run(pytester, monkeypatch, tmp_path,
                         [_entry("test_inner.py::test_fails", reason="fails on purpose")])
    outcome.assert_outcomes(passed=3, xfailed=1)
    assert outcome.ret == pytest.ExitCode.OK
    case = _case(root, "test_fails")
    skipped = case.find("skipped")
    assert skipped.get("type") == "pytest.xfail"
    assert skipped.get("message") == f"fails on purpose ({LINK})"
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["expected_failure"] == "expected.toml entry 1"
    assert "bhyve-snaptest expected failures" not in outcome.stdout.str()


def test_a_listed_pass_fails_the_run_as_an_unexpected_pass(pytester, monkeypatch, tmp_path):
    outcome, root = _run(pytester, monkeypatch, tmp_path,
                         [_entry("test_inner.py::test_fails"),
                          _entry("test_inner.py::test_passes", reason="was broken")])
    outcome.assert_outcomes(passed=2, failed=1, xfailed=1)
    assert outcome.ret == pytest.ExitCode.TESTS_FAILED
    outcome.stdout.fnmatch_lines([
        "*bhyve-snaptest expected failures*",
        "unexpected pass: test_inner.py::test_passes is listed in expected.toml (entry 2: "
        "was broken); remove the entry",
    ])
    failure = _case(root, "test_passes").find("failure")
    assert failure.get("message") == f"[XPASS(strict)] was broken ({LINK})"
    # test_fails failed as expected: only the pass is named
    assert "unexpected pass: test_inner.py::test_fails" not in outcome.stdout.str()


def test_a_listed_skip_failed_by_fail_on_skip_is_no_unexpected_pass(pytester, monkeypatch,
                                                                    tmp_path):
    inner = """
        import pytest

        def test_skips():
            pytest.skip("no vmm.ko")
    """
    outcome, _ = _run(pytester, monkeypatch, tmp_path, [_entry("test_inner.py::test_skips")],
                      "--fail-on-skip", inner=inner)
    outcome.assert_outcomes(failed=1)
    assert "unexpected pass" not in outcome.stdout.str()


def test_a_pattern_marks_every_matching_id_and_brackets_are_literal(pytester, monkeypatch,
                                                                    tmp_path):
    inner = """
        import pytest

        @pytest.mark.parametrize("disk", ["ahci-hd", "nvme", "nvme-2cpu"])
        def test_seed(disk):
            assert not disk.startswith("nvme"), "nvme cannot be saved"
    """
    outcome, root = _run(pytester, monkeypatch, tmp_path,
                         [_entry("test_inner.py::*nvme*"),
                          _entry("test_inner.py::test_seed[ahci-hd]")], inner=inner)
    # the nvme ids are xfail by the pattern; [ahci-hd], listed by its exact id, passes
    outcome.assert_outcomes(failed=1, xfailed=2)
    assert _case(root, "test_seed[nvme]").find("skipped").get("type") == "pytest.xfail"
    assert "unexpected pass: test_inner.py::test_seed[ahci-hd] is listed in expected.toml " \
        "(entry 2: known to fail)" in outcome.stdout.str()
    assert "unexpected pass: test_inner.py::test_seed[nvme" not in outcome.stdout.str()


def test_a_stale_entry_is_reported_and_fails_the_run_only_when_strict(pytester, monkeypatch,
                                                                      tmp_path):
    entries = [_entry("test_inner.py::test_fails"), _entry("test_inner.py::test_renamed")]
    outcome, root = _run(pytester, monkeypatch, tmp_path, entries)
    outcome.assert_outcomes(passed=3, xfailed=1)
    assert outcome.ret == pytest.ExitCode.OK
    outcome.stdout.fnmatch_lines([
        "*bhyve-snaptest expected failures*",
        "stale expected failure: entry 2 (test test_inner.py::test_renamed) matches no "
        "test; remove it or fix the id",
    ])
    properties = [(p.get("name"), p.get("value"))
                  for p in root.find("testsuite").find("properties")]
    assert ("expected_failures.stale", "expected.toml entry 2: test_inner.py::test_renamed") \
        in properties

    strict, _ = _run(pytester, monkeypatch, tmp_path, entries, "--strict-expected")
    strict.assert_outcomes(passed=3, xfailed=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED


def test_under_xdist_the_controller_reports_what_its_workers_saw(pytester, monkeypatch,
                                                                  tmp_path):
    outcome, root = _run(pytester, monkeypatch, tmp_path,
                         [_entry("test_inner.py::test_fails"),
                          _entry("test_inner.py::test_passes", reason="was broken"),
                          _entry("test_inner.py::test_renamed")],
                         "-p", "xdist", "-n", "2", run=pytester.runpytest_subprocess)
    outcome.assert_outcomes(passed=2, failed=1, xfailed=1)
    outcome.stdout.fnmatch_lines([
        "*bhyve-snaptest expected failures*",
        "unexpected pass: test_inner.py::test_passes is listed in expected.toml (entry 2: "
        "was broken); remove the entry",
        "stale expected failure: entry 3 (test test_inner.py::test_renamed) matches no "
        "test; remove it or fix the id",
    ])
    stale = [p.get("value") for p in root.iter("property")
             if p.get("name") == "expected_failures.stale"]
    assert stale == ["expected.toml entry 3: test_inner.py::test_renamed"]


def test_a_test_left_out_of_the_run_is_not_stale(pytester, monkeypatch, tmp_path):
    entries = [_entry("test_inner.py::test_fails")]
    deselected, _ = _run(pytester, monkeypatch, tmp_path, entries, "-k", "test_passes")
    deselected.assert_outcomes(passed=1)
    chosen, _ = _run(pytester, monkeypatch, tmp_path, entries, "test_inner.py::test_passes")
    chosen.assert_outcomes(passed=1)
    for outcome in (deselected, chosen):
        assert "stale expected failure" not in outcome.stdout.str()
        assert outcome.ret == pytest.ExitCode.OK


def test_an_entry_for_another_hypervisor_is_silent(pytester, monkeypatch, tmp_path):
    outcome, _ = _run(pytester, monkeypatch, tmp_path,
                      [_entry("test_inner.py::test_fails", hypervisor="bhyve"),
                       _entry("test_inner.py::test_gone", hypervisor="bhyve-emulated")],
                      "--hypervisor", "qemu")
    outcome.assert_outcomes(passed=3, failed=1)
    assert "expected failure" not in outcome.stdout.str()


@pytest.mark.skipif(platform.system() == "FreeBSD", reason="bhyve is real bhyve on FreeBSD")
def test_the_emulated_bhyve_matches_by_personality(pytester, monkeypatch, tmp_path):
    outcome, _ = _run(pytester, monkeypatch, tmp_path,
                      [_entry("test_inner.py::test_passes", hypervisor="bhyve-emulated",
                              personality="main"),
                       _entry("test_inner.py::test_fails", hypervisor="bhyve-emulated",
                              personality="14"),
                       _entry("test_inner.py::test_fails", hypervisor="bhyve")],
                      "--hypervisor", "bhyve", "--bhyve-emulation", "14")
    outcome.assert_outcomes(passed=3, xfailed=1)
    assert "expected failure" not in outcome.stdout.str()


def test_repeated_runs_are_each_expected_to_fail(pytester, monkeypatch, tmp_path):
    inner = """
        import pytest

        @pytest.mark.scenario
        def test_scenario():
            assert False
    """
    outcome, _ = _run(pytester, monkeypatch, tmp_path, [_entry("test_inner.py::test_scenario")],
                      "-p", "bhyve_snaptest.repeat", "--repeat", "3", inner=inner)
    outcome.assert_outcomes(xfailed=3)


def test_a_bad_file_is_a_usage_error_naming_the_entry_in_junit_too(pytester, monkeypatch,
                                                                   tmp_path):
    bad = "[[xfail]]\ntest = \"test_inner.py::test_fails\"\nhypervisor = \"qemu\"\n" \
          "reason = \"no link\"\n"
    outcome, root = _run(pytester, monkeypatch, tmp_path, [_entry("test_inner.py::x"), bad])
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    message = "expected.toml: entry 2 (the [[xfail]] table number 2): link missing"
    assert message in outcome.stderr.str()
    error = root.find("testsuite").find("testcase").find("error")
    assert message in error.text


def _write(tmp_path, text):
    path = tmp_path / "expected.toml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = {"test": "t.py::test_x", "hypervisor": "bhyve", "reason": "r", "link": LINK}


@pytest.mark.parametrize(("change", "problem"), [
    ({"flaky": "yes"}, "entry 1 (the [[xfail]] table number 1): unknown key(s) flaky"),
    ({"reason": None}, "reason missing"),
    ({"reason": " "}, "reason must be a non-empty string"),
    ({"hypervisor": "bhyve-15"}, "hypervisor 'bhyve-15' is none of bhyve, qemu, "
                                 "bhyve-emulated"),
    ({"test": "test_x"}, "test 'test_x' is not a node id"),
    ({"link": "PR 123"}, "link 'PR 123' is not a URL"),
    ({"hypervisor": "qemu", "release": "14.3-RELEASE"}, "release is a FreeBSD host's"),
    ({"personality": "main"}, "personality is the emulated bhyve's"),
    ({"hypervisor": "bhyve-emulated", "personality": "12"}, "personality '12' is none of"),
])
def test_each_bad_entry_is_refused_with_its_fix(tmp_path, change, problem):
    table = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    body = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in table.items())
    path = _write(tmp_path, "[[xfail]]\n" + body)
    with pytest.raises(ConfigError, match=re.escape(problem)) as refused:
        load(path)
    assert str(path) in str(refused.value)


@pytest.mark.parametrize(("text", "problem"), [
    ("[[xfail]\n", "is not valid TOML"),
    ("[[expected]]\ntest = 'x'\n", "unknown key(s) expected at the top level"),
    ("xfail = 'all'\n", "xfail must be an array of tables"),
])
def test_a_bad_file_is_refused(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load(_write(tmp_path, text))


def test_a_missing_file_named_on_the_command_line_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the expected failures"):
        load(tmp_path / "absent.toml")


def test_release_and_personality_narrow_an_entry():
    def entry(**extra):
        return Entry(index=1, test="t.py::x", reason="r", link=LINK, **extra)

    freebsd_14_3 = RunIdentity("bhyve", release="14.3-RELEASE")
    assert entry(hypervisor="bhyve").applies_to(freebsd_14_3)
    assert entry(hypervisor="bhyve", release="14.3-RELEASE").applies_to(freebsd_14_3)
    assert entry(hypervisor="bhyve", release="14.*").applies_to(freebsd_14_3)
    assert not entry(hypervisor="bhyve", release="15.*").applies_to(freebsd_14_3)
    assert not entry(hypervisor="bhyve-emulated").applies_to(freebsd_14_3)
    assert not entry(hypervisor="qemu").applies_to(freebsd_14_3)
    emulated_13 = RunIdentity("bhyve-emulated", personality="13")
    assert entry(hypervisor="bhyve-emulated", personality="13").applies_to(emulated_13)
    assert not entry(hypervisor="bhyve-emulated", personality="main").applies_to(emulated_13)
    assert not entry(hypervisor="bhyve").applies_to(emulated_13)


def test_the_run_is_named_as_its_junit_names_say(monkeypatch):
    monkeypatch.setattr("bhyve_snaptest.junit.platform.release", lambda: "14.3-RELEASE-p2")
    assert run_identity("bhyve", "main", freebsd=True) == \
        RunIdentity("bhyve", release="14.3-RELEASE")
    assert run_identity("bhyve", "d34547", freebsd=False) == \
        RunIdentity("bhyve-emulated", personality="d34547")
    assert run_identity("qemu", "main", freebsd=False) == RunIdentity("qemu")


def test_wildcards():
    assert wildcard_match("a.py::*nvme*", "a.py::test_x[nvme-virtio-net-256M-1cpu]")
    assert wildcard_match("a.py::t[nvme]", "a.py::t[nvme]")
    assert not wildcard_match("a.py::t[nvme]", "a.py::tn")  # no character classes
    assert not wildcard_match("a.py::test_x", "a.py::test_x[nvme]")  # whole ids only


def test_stale_means_looked_for_and_not_found(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").touch()
    (tmp_path / "tests" / "test_b.py").touch()

    def entry(index, test):
        return Entry(index=index, test=test, hypervisor="qemu", reason="r", link=LINK)

    entries = [entry(1, "tests/test_a.py::test_one"),   # found
               entry(2, "tests/test_a.py::test_old"),   # its file collected: stale
               entry(3, "tests/test_b.py::test_two"),   # its file not collected: unknown
               entry(4, "tests/test_gone.py::test_x"),  # its file removed: stale
               entry(5, "tests/*.py::*nvme*"),          # a pattern over collected files
               entry(6, "tests/test_a.py::test_one[nvme-*]"),  # not this run's parameters
               entry(7, "tests/test_a.py::test_old[nvme-*]")]  # a function gone
    nodeids = ["tests/test_a.py::test_one"]
    stale = stale_entries(entries, nodeids, root=tmp_path, narrowed=set())
    assert [e.index for e in stale] == [2, 4, 5, 7]
    narrowed = stale_entries(entries, nodeids, root=tmp_path, narrowed={"tests/test_a.py"})
    assert [e.index for e in narrowed] == [4]


def test_narrowed_modules_are_named_as_node_ids(tmp_path):
    root = tmp_path
    assert narrowed_modules(["tests/test_a.py::test_one", "tests/unit", "test_b.py"],
                            root, root) == {"tests/test_a.py"}
    assert narrowed_modules(["test_a.py::t[x]"], root / "tests", root) == {"tests/test_a.py"}


def _collected(*options):
    """The node ids pytest collects in tests/scenarios of this checkout (no VM boots)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *options, "tests/scenarios"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("tests/")], done


def test_the_repositorys_file_expects_nvme_to_fail_and_nothing_else():
    """Every entry marks the nvme configurations of the full matrix and no other, on each
    hypervisor (bhyve on any release, the emulation in any personality, QEMU)."""
    entries = load(DEFAULT_FILE)
    nodeids, _ = _collected("--matrix", "full")
    for run in (RunIdentity("bhyve", release="14.3-RELEASE"),
                RunIdentity("bhyve-emulated", personality="main"), RunIdentity("qemu")):
        applying = [e for e in entries if e.applies_to(run)]
        marked = {n for n in nodeids if any(e.matches(n) for e in applying)}
        nvme = {n for n in nodeids if "[nvme-" in n}
        assert nvme and marked == nvme, run
        assert all(any(e.matches(n) for n in nodeids) for e in applying), run


def test_the_repositorys_file_has_no_stale_entry_in_a_default_run():
    """The default matrix has no nvme id; the entries' test functions still exist, so a
    nightly run is not told to remove them."""
    _, done = _collected()
    assert "stale expected failure" not in done.stdout
    nodeids, _ = _collected("--matrix", "full")
    assert stale_entries(load(DEFAULT_FILE), [n for n in nodeids if "nvme" not in n],
                         root=REPO_ROOT, narrowed=set()) == []


def test_no_expected_failure_is_marked_in_code():
    """Known failures live in expected-failures.toml, with a reason and a link; the one
    ``pytest.xfail()`` call is the Capsicum scenario's, decided by what the run observes."""
    own = {Path(__file__).resolve(), REPO_ROOT / "fixtures" / "bhyve_snaptest" / "expected.py"}
    marked = [path for folder in ("tests", "fixtures")
              for path in (REPO_ROOT / folder).rglob("*.py")
              if path.resolve() not in own and "mark.xfail" in path.read_text()]
    assert marked == []


def test_a_run_with_a_conftest_in_a_subfolder_reports_normally(pytester, monkeypatch, tmp_path):
    """The plugin object must hash: with a conftest.py below the rootdir, pytest asks pluggy
    for the hooks of the plugins that apply to a test's folder (a set of plugins)."""
    pytester.mkpydir("sub").joinpath("conftest.py").write_text("")
    pytester.path.joinpath("sub", "test_sub.py").write_text("def test_sub():\n    pass\n")
    outcome, root = _run(pytester, monkeypatch, tmp_path, [], ".")
    assert "INTERNALERROR" not in outcome.stdout.str() + outcome.stderr.str()
    case = _case(root, "test_sub")
    assert case.find("failure") is None and case.find("error") is None
