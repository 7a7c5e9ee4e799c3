"""A usage error still leaves a JUnit file with its reason, so that CI shows it."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from bhyve_snaptest.cli import _exit_status, main
from bhyve_snaptest.errors import ExitStatus, HarnessError, ImageError, PrerequisiteMissing
from bhyve_snaptest.junit import USAGE_CLASSNAME, USAGE_NAME
from bhyve_snaptest.launch import usage_error_junit_path


def launch(tmp_path, *args):
    """``python -m bhyve_snaptest.launch ARGS`` in an empty folder, as ./snaptest runs pytest."""
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {**os.environ, "BHYVE_SNAPTEST_STATE": str(tmp_path / "state")}
    command = [sys.executable, "-m", "bhyve_snaptest.launch", "-p", "no:cacheprovider",
               "-p", "bhyve_snaptest.plugin", "--results-dir", str(tmp_path / "results"), *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def the_error(junit):
    root = ET.parse(junit).getroot()
    [case] = root.iter("testcase")
    assert (case.get("classname"), case.get("name")) == (USAGE_CLASSNAME, USAGE_NAME)
    return case.find("error").get("message"), case.find("error").text


def test_an_unknown_option_is_written_to_junit(tmp_path):
    done = launch(tmp_path, "--hypervsor", "qemu")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stderr
    assert "unrecognized arguments: --hypervsor" in done.stderr
    message, text = the_error(tmp_path / "results" / "latest" / "junit.xml")
    assert message.startswith("usage error: ")
    assert "unrecognized arguments: --hypervsor" in text


def test_a_bad_harness_option_is_written_to_junit(tmp_path):
    done = launch(tmp_path, "--copy-size", "lots")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stderr
    message, _ = the_error(tmp_path / "results" / "latest" / "junit.xml")
    assert "lots" in message


def test_junitxml_is_honoured_and_a_good_run_is_untouched(tmp_path):
    junit = tmp_path / "mine.xml"
    done = launch(tmp_path, "--junitxml", str(junit), "--no-such-option")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "no-such-option" in the_error(junit)[1]
    done = launch(tmp_path, "--junitxml", str(junit))
    assert done.returncode == pytest.ExitCode.OK, done.stdout + done.stderr
    [case] = ET.parse(junit).getroot().iter("testcase")
    assert case.get("name") == "test_nothing" and case.find("error") is None


def test_the_junit_path_survives_a_broken_command_line(tmp_path):
    assert usage_error_junit_path(["--junitxml", str(tmp_path / "j.xml")]) == \
        tmp_path / "j.xml"
    path = usage_error_junit_path(["--results-dir", str(tmp_path / "r"), "--bad"])
    assert path.parent.parent == tmp_path / "r" and path.name == "junit.xml"


def test_bhyve_snaptest_exit_statuses(tmp_path, capsys):
    assert main(["no-such-command"]) == ExitStatus.USAGE_ERROR
    assert main(["report"]) == ExitStatus.USAGE_ERROR  # its folder is missing
    assert main(["report", str(tmp_path)]) == ExitStatus.USAGE_ERROR  # no junit.xml in it
    assert "has no junit.xml" in capsys.readouterr().err
    assert main(["--help"]) == ExitStatus.OK
    assert _exit_status(PrerequisiteMissing("no vmm.ko")) == ExitStatus.PREREQUISITE
    assert _exit_status(ImageError("download failed")) == ExitStatus.PREREQUISITE
    assert _exit_status(HarnessError("anything else")) == ExitStatus.INTERNAL_ERROR


def test_the_exit_statuses_are_pytests_own_but_one():
    ours = {status.name: int(status) for status in ExitStatus}
    assert ours.pop("PREREQUISITE") == 69  # sysexits(3) EX_UNAVAILABLE
    assert ours == {name: int(pytest.ExitCode[name]) for name in ours}
