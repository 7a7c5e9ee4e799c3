"""kyua/: the Kyuafile and the TAP test program that runs one scenario file under kyua.

kyua runs on FreeBSD; this project's Linux machines do not install it, so these tests check
the Kyuafile's structure (the calls and properties kyuafile(5) defines) and run the wrapper
itself against a stub checkout (``./snaptest`` and ``.venv/bin/python`` that record their
arguments and exit with a chosen status). The TAP the wrapper prints is checked against
what kyua's TAP interface turns into a result (freebsd-src contrib/kyua/engine/tap.cpp,
tap_to_result): a ``1..0 # SKIP reason`` plan is skipped, any ``not ok`` failed, all ``ok``
with exit 0 passed.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KYUA = REPO / "kyua"
WRAPPER = KYUA / "scenario"

#: kyua's interfaces; the wrapper speaks TAP.
PROGRAM_CALL = re.compile(r"\b(atf|plain|tap)_test_program\s*\{(.*?)\}", re.DOTALL)
PROPERTY = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|true|false|\d+)')


def lua_code(text: str) -> str:
    """The Kyuafile without its ``--`` comments (none of ours is inside a string)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def programs(text: str) -> dict[str, dict[str, str]]:
    """Each registered test program's name and properties (strings unquoted)."""
    found = {}
    for interface, body in PROGRAM_CALL.findall(lua_code(text)):
        properties = {key: value.strip('"') for key, value in PROPERTY.findall(body)}
        properties["interface"] = interface
        found[properties["name"]] = properties
    return found


def product_scenarios() -> set[str]:
    """The scenario files the nightly selection runs: marked scenario, not selftest."""
    return {path.stem for path in (REPO / "tests" / "scenarios").glob("test_*.py")
            if "pytest.mark.scenario" in (text := path.read_text())
            and "pytest.mark.selftest" not in text}


def test_the_kyuafile_is_syntax_2_with_one_suite_and_balanced_calls():
    code = lua_code((KYUA / "Kyuafile").read_text())
    statements = [line for line in code.splitlines() if line.strip()]
    assert statements[0].strip() == "syntax(2)"
    assert re.findall(r'test_suite\("([^"]*)"\)', code) == ["bhyve_snaptest"]
    for opening, closing in ("()", "{}"):
        assert code.count(opening) == code.count(closing), f"unbalanced {opening}{closing}"
    # Every statement is a call kyuafile(5) defines (or the continuation of one).
    calls = re.findall(r"^(\w+)\s*[({]", code, re.MULTILINE)
    assert set(calls) <= {"syntax", "test_suite", "tap_test_program", "include"}


def test_the_kyuafile_registers_every_product_scenario_and_nothing_else():
    registered = programs((KYUA / "Kyuafile").read_text())
    assert set(registered) == product_scenarios()
    assert "test_suspend_restore" in registered  # the parser found something real


def test_every_program_is_the_wrapper_and_executable():
    for name in programs((KYUA / "Kyuafile").read_text()):
        program = KYUA / name
        assert program.is_file(), f"kyua/{name} is missing"
        assert os.access(program, os.X_OK), f"kyua/{name} is not executable"
        assert program.resolve() == WRAPPER.resolve(), f"kyua/{name} is not kyua/scenario"


def test_every_program_has_the_metadata_a_bhyve_run_needs():
    for name, properties in programs((KYUA / "Kyuafile").read_text()).items():
        assert properties["interface"] == "tap", name
        assert properties["required_user"] == "root", name
        assert properties["is_exclusive"] == "true", name
        # Above pytest-timeout's 900 s per test: the harness's own timeout ends a test
        # first, with its teardown; kyua's SIGKILLs the process group.
        assert int(properties["timeout"]) > 900, name
        assert properties.get("description"), name


def test_no_program_in_kyua_is_left_unregistered():
    registered = set(programs((KYUA / "Kyuafile").read_text()))
    executables = {p.name for p in KYUA.iterdir() if p.is_file() and os.access(p, os.X_OK)}
    assert executables - registered == {"scenario"}


def test_the_wrapper_is_posix_sh():
    assert WRAPPER.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(WRAPPER)], check=True)


# A stub checkout: ./snaptest and .venv/bin/python log their arguments to calls.log and
# exit with STUB_<STEP> (setup, doctor, pytest); pytest's stub makes a results folder and
# prints a line that looks like TAP on its standard output, which must not reach kyua's.
STUB_SNAPTEST = """#!/bin/sh
echo "snaptest $*" >>calls.log
case "$1" in
setup) echo "snaptest: missing packages: edk2-bhyve" >&2; exit "${STUB_SETUP:-0}" ;;
doctor) echo "2 check(s) block a run: vmm loaded, root"; exit "${STUB_DOCTOR:-0}" ;;
esac
exit 0
"""
STUB_PYTHON = """#!/bin/sh
echo "python $*" >>calls.log
echo "ok 7 - a line of pytest's that looks like TAP"
mkdir -p results/run-new && ln -sfn run-new results/latest
echo "last words of the run" >&2
exit "${STUB_PYTEST:-0}"
"""


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "tests" / "scenarios").mkdir(parents=True)
    (root / "tests" / "scenarios" / "test_suspend_restore.py").write_text("")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / "results").mkdir()
    (root / "results" / "run-old").mkdir()
    (root / "results" / "latest").symlink_to("run-old")
    for path, text in ((root / "snaptest", STUB_SNAPTEST),
                       (root / ".venv" / "bin" / "python", STUB_PYTHON)):
        path.write_text(text)
        path.chmod(0o755)
    return root


def installed(tmp_path, name="test_suspend_restore") -> Path:
    """The wrapper as installed away from any checkout (/usr/local/tests/...)."""
    directory = tmp_path / "usr-local-tests" / "bhyve-snaptest"
    directory.mkdir(parents=True)
    program = directory / name
    program.write_text(WRAPPER.read_text())
    program.chmod(0o755)
    return program


def run_wrapper(program: Path, tmp_path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), **env}
    return subprocess.run([str(program)], capture_output=True, text=True, env=environment,
                          cwd=tmp_path, timeout=30, check=False)


def kyua_result(stdout: str, returncode: int) -> str:
    """What kyua makes of this TAP (engine/tap.cpp, tap_to_result), for a well-formed one."""
    lines = stdout.splitlines()
    if lines and lines[0].startswith("1..0 # SKIP "):
        assert len(lines) == 1
        return "skipped: " + lines[0].removeprefix("1..0 # SKIP ")
    assert lines[0] == "1..1" and len(lines) == 2, stdout
    if lines[1].startswith("not ok 1 - "):
        return "failed"
    assert lines[1].startswith("ok 1 - "), stdout
    return "passed" if returncode == 0 else "broken"


@pytest.mark.parametrize(("status", "meaning"), [
    (1, "a test failed"), (2, "interrupted"), (3, "the harness could not do what was asked"),
    (4, "usage error"), (5, "no test collected")])
def test_a_failed_run_is_not_ok_with_its_status_meaning_and_results(
        checkout, tmp_path, status, meaning):
    done = run_wrapper(installed(tmp_path), tmp_path, TEST_ENV_checkout=str(checkout),
                       STUB_PYTEST=str(status))
    assert done.returncode == status
    assert kyua_result(done.stdout, done.returncode) == "failed"
    assert done.stdout.splitlines()[1] == (
        f"not ok 1 - tests/scenarios/test_suspend_restore.py: pytest exit status {status} "
        f"({meaning}) (results/run-new)")


def test_a_passed_run_is_ok_and_runs_the_nightly_selection_on_its_file(checkout, tmp_path):
    done = run_wrapper(installed(tmp_path), tmp_path, TEST_ENV_checkout=str(checkout))
    assert done.returncode == 0
    assert kyua_result(done.stdout, done.returncode) == "passed"
    assert done.stdout == "1..1\nok 1 - tests/scenarios/test_suspend_restore.py " \
                          "(results/run-new)\n"
    assert (checkout / "calls.log").read_text().splitlines() == [
        "snaptest setup", "snaptest doctor",
        "python -m bhyve_snaptest.launch --fail-on-skip -m scenario and not selftest "
        "tests/scenarios/test_suspend_restore.py"]
    # The harness's output goes to standard error, where kyua keeps it apart from the TAP.
    assert "ok 7 - a line of pytest's" in done.stderr
    assert "last words of the run" in done.stderr


@pytest.mark.parametrize(("step", "reason"), [
    ("SETUP", "set-up: snaptest: missing packages: edk2-bhyve"),
    ("DOCTOR", "doctor: 2 check(s) block a run: vmm loaded, root"),
    ("PYTEST", "pytest: last words of the run")])
def test_a_missing_prerequisite_is_skipped_with_the_harness_words(
        checkout, tmp_path, step, reason):
    done = run_wrapper(installed(tmp_path), tmp_path, TEST_ENV_checkout=str(checkout),
                       **{f"STUB_{step}": "69"})
    assert done.returncode == 69
    assert kyua_result(done.stdout, done.returncode) == f"skipped: {reason}"


@pytest.mark.parametrize("step", ["SETUP", "DOCTOR"])
def test_a_step_before_pytest_that_fails_is_not_ok_without_older_results(
        checkout, tmp_path, step):
    done = run_wrapper(installed(tmp_path), tmp_path, TEST_ENV_checkout=str(checkout),
                       **{f"STUB_{step}": "3"})
    assert done.returncode == 3
    assert kyua_result(done.stdout, done.returncode) == "failed"
    label = {"SETUP": "set-up", "DOCTOR": "doctor"}[step]
    # results/latest still names an older run: the line must not point there.
    assert done.stdout.splitlines()[1] == (
        f"not ok 1 - tests/scenarios/test_suspend_restore.py: {label} exit status 3 "
        "(the harness could not do what was asked)")
    assert "python" not in (checkout / "calls.log").read_text()


def test_harness_options_reach_doctor_and_pytest(checkout, tmp_path):
    done = run_wrapper(installed(tmp_path), tmp_path, TEST_ENV_checkout=str(checkout),
                       TEST_ENV_harness_options="--bhyve /opt/bhyve --bhyvectl /opt/bhyvectl")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (checkout / "calls.log").read_text().splitlines()
    assert calls[1] == "snaptest doctor --bhyve /opt/bhyve --bhyvectl /opt/bhyvectl"
    assert calls[2].endswith("test_suspend_restore.py --bhyve /opt/bhyve --bhyvectl /opt/bhyvectl")


def test_the_checkout_comes_from_the_environment_when_kyua_has_no_variable(checkout, tmp_path):
    done = run_wrapper(installed(tmp_path), tmp_path, BHYVE_SNAPTEST_CHECKOUT=str(checkout))
    assert kyua_result(done.stdout, done.returncode) == "passed"


def test_a_program_in_a_checkout_finds_the_checkout_above_it(checkout, tmp_path):
    (checkout / "kyua").mkdir()
    program = checkout / "kyua" / "test_suspend_restore"
    program.write_text(WRAPPER.read_text())
    program.chmod(0o755)
    done = run_wrapper(program, tmp_path)
    assert kyua_result(done.stdout, done.returncode) == "passed"


def test_an_installed_program_without_a_checkout_fails_saying_what_to_set(tmp_path):
    done = run_wrapper(installed(tmp_path), tmp_path)
    assert done.returncode == 3
    assert kyua_result(done.stdout, done.returncode) == "failed"
    assert "test_suites.bhyve_snaptest.checkout" in done.stdout


def test_a_program_named_after_no_scenario_file_fails(checkout, tmp_path):
    done = run_wrapper(installed(tmp_path, "test_no_such_scenario"), tmp_path,
                       TEST_ENV_checkout=str(checkout))
    assert done.returncode == 4
    assert kyua_result(done.stdout, done.returncode) == "failed"
    assert "tests/scenarios/test_no_such_scenario.py: not in" in done.stdout
