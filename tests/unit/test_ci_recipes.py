"""The nightly recipes: the Jenkinsfile and nightly/cron.sh.

Neither Jenkins nor FreeBSD runs here. The Jenkinsfile is read: its ``sh`` steps run only
commands the README gives, and it keeps the JUnit file, the results folder and the report.
The cron script runs for real against a stub ``./snaptest`` in a throwaway clone with an
origin to pull from; FreeBSD's ``lockf -s -t 0`` is stood in for by util-linux's
``flock -n -E 75``, which exits 75 (EX_TEMPFAIL) when the file is locked as lockf does
(freebsd-src usr.bin/lockf/lockf.c, main()); the script takes its lock command from
NIGHTLY_LOCK_COMMAND for that.
"""

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JENKINSFILE = REPO / "Jenkinsfile"
CRON = REPO / "nightly" / "cron.sh"
NIGHTLY_COMMAND = './snaptest test -m "scenario and not selftest"'


def readme_commands() -> set[str]:
    """Every command in the README's sh code blocks, without its trailing comment."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    return {line.split("  #", 1)[0].strip() for block in blocks
            for line in block.splitlines() if line.strip() and not line.startswith("#")}


def groovy_code() -> str:
    """The Jenkinsfile without its // comments (none of ours is inside a string)."""
    return "\n".join(re.sub(r"^\s*//.*$", "", line)
                     for line in JENKINSFILE.read_text().splitlines())


def sh_steps(code: str) -> list[str]:
    """The scripts of every sh step: sh 'x', sh "x" and sh(script: 'x', ...)."""
    return [match.group("q1") or match.group("q2") for match in re.finditer(
        r"""\bsh\s*(?:\(\s*script:\s*)?(?:'(?P<q1>[^']*)'|"(?P<q2>(?:[^"\\]|\\.)*)")""",
        code)]


def test_the_readme_gives_the_commands_the_recipes_run():
    commands = readme_commands()
    assert "./snaptest setup" in commands or "`./snaptest setup`" in \
        (REPO / "README.md").read_text()
    assert NIGHTLY_COMMAND in commands


def test_the_jenkinsfile_runs_only_readme_commands():
    steps = sh_steps(groovy_code())
    assert steps == ["./snaptest setup", NIGHTLY_COMMAND]
    readme = (REPO / "README.md").read_text()
    for step in steps:
        assert step in readme_commands() or f"`{step}`" in readme, step


def test_the_jenkinsfile_keeps_junit_results_and_the_report():
    code = groovy_code()
    assert re.search(r"junit\s+testResults:\s*'results/latest/junit\.xml',\s*"
                     r"allowEmptyResults:\s*false", code)
    assert re.search(r"archiveArtifacts\s+artifacts:\s*'results/\*\*'", code)
    assert re.search(r"reportDir:\s*'results/latest'", code)
    assert re.search(r"reportFiles:\s*'report\.html'", code)
    # ...after every build, passed or not.
    post = code[code.index("post {"):]
    assert "always {" in post and "junit" in post and "publishHTML" in post


def test_the_jenkinsfile_is_a_nightly_freebsd_job_with_a_shared_cache():
    code = groovy_code()
    assert re.search(r"agent\s*\{\s*label\s+'freebsd && bhyve'\s*\}", code)
    assert "cron('H 2 * * *')" in code
    assert "timeout(time: 90, unit: 'MINUTES')" in code
    assert "disableConcurrentBuilds()" in code
    assert re.search(r"BHYVE_SNAPTEST_CACHE\s*=\s*'/var/cache/bhyve-snaptest'", code)
    # An older night's results must not be published as tonight's.
    assert code.index("dir('results') { deleteDir() }") < code.index("./snaptest setup")


def test_the_jenkinsfile_maps_exit_status_1_to_unstable_and_others_to_failure():
    code = groovy_code()
    assert "returnStatus: true" in code
    assert re.search(r"status == 1\)\s*\{\s*unstable\(", code)
    assert re.search(r"status != 0\)\s*\{\s*error\(", code)


def test_the_jenkinsfile_brackets_balance():
    code = re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"", "''", groovy_code())
    for opening, closing in ("()", "{}", "[]"):
        assert code.count(opening) == code.count(closing), f"unbalanced {opening}{closing}"


def test_the_cron_script_is_posix_sh():
    assert CRON.read_text().startswith("#!/bin/sh\n")
    assert "set -eu" in CRON.read_text()
    subprocess.run(["sh", "-n", str(CRON)], check=True)
    assert os.access(CRON, os.X_OK)


def test_the_cron_script_runs_only_readme_commands():
    text = CRON.read_text()
    assert 'SELECTION="scenario and not selftest"' in text
    assert './snaptest test -m "$SELECTION"' in text
    assert set(re.findall(r"\./snaptest \w+", text)) == {"./snaptest test"}


# The stub harness: logs its arguments, writes a results folder and the summary
# ./snaptest test ends with, and exits with STUB_STATUS.
STUB_SNAPTEST = """#!/bin/sh
echo "$*" >>"$STUB_CALLS"
if [ "${STUB_STATUS:-0}" = 69 ]; then
    echo "snaptest: missing packages: edk2-bhyve; run as root" >&2
    exit 69
fi
mkdir -p results/run-tonight && ln -sfn run-tonight results/latest
echo "pytest output" && echo "snaptest: summary:" >&2
if [ "${STUB_STATUS:-0}" = 0 ]; then
    echo "  passed  unit tests and every scenario (FreeBSD: default hypervisor)" >&2
else
    echo "  FAILED  unit tests and every scenario (FreeBSD: default hypervisor)" \
         "(exit status ${STUB_STATUS})" >&2
fi
exit "${STUB_STATUS:-0}"
"""


def git(*args: str, cwd: Path) -> str:
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=environment, check=True,
                           capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path):
    """A checkout of an origin that is one commit ahead, with the stub harness and the
    cron script; results/latest names an older night's run."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "snaptest").write_text(STUB_SNAPTEST)
    (work / "snaptest").chmod(0o755)
    (work / "nightly").mkdir()
    shutil.copy2(CRON, work / "nightly" / "cron.sh")
    (work / ".gitignore").write_text("results/\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp_path / "origin.git"), cwd=tmp_path)
    git("clone", "-q", str(tmp_path / "origin.git"), str(tmp_path / "checkout"), cwd=tmp_path)
    (work / "new-file").write_text("tonight's change\n")
    git("add", "new-file", cwd=work)
    git("commit", "-q", "-m", "second", cwd=work)
    git("push", "-q", str(tmp_path / "origin.git"), "main", cwd=work)
    checkout = tmp_path / "checkout"
    (checkout / "results" / "run-old").mkdir(parents=True)
    (checkout / "results" / "latest").symlink_to("run-old")
    return checkout


def run_cron(checkout: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                   "HOME": str(tmp_path),
                   "STUB_CALLS": str(tmp_path / "calls.log"),
                   "NIGHTLY_LOCK": str(tmp_path / "nightly.lock"),
                   "NIGHTLY_LOCK_COMMAND": "flock -n -E 75", **env}
    return subprocess.run(["sh", str(checkout / "nightly" / "cron.sh"), str(checkout)],
                          env=environment, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, check=False)


def log_of(checkout: Path) -> str:
    return (checkout / "results" / "nightly.log").read_text()


@pytest.mark.parametrize(("status", "meaning", "verdict"), [
    (0, "passed", "  passed  unit tests"), (1, "a test failed", "  FAILED  unit tests"),
    (3, "the harness could not do what was asked", "  FAILED  unit tests")])
def test_a_night_pulls_runs_the_nightly_selection_and_logs_its_verdict(
        clone, tmp_path, status, meaning, verdict):
    done = run_cron(clone, tmp_path, STUB_STATUS=str(status))
    assert done.returncode == status, done.stderr
    assert (clone / "new-file").exists(), "git pull --ff-only did not run"
    assert (tmp_path / "calls.log").read_text() == "test -m scenario and not selftest\n"
    log = log_of(clone)
    head = git("rev-parse", "--short", "HEAD", cwd=clone).strip()
    assert re.search(rf"UTC nightly {head}: exit status {status} \({re.escape(meaning)}\)\n"
                     r"  results/run-tonight, output .*/results/nightly-\d{8}T\d{6}Z\.out\n"
                     + re.escape(verdict), log), log
    output = re.search(r"output (\S+)", log).group(1)
    assert "pytest output" in Path(output).read_text()
    assert done.stdout == "" and done.stderr == "", "cron would mail this"


def test_a_missing_prerequisite_logs_the_harness_words_and_no_older_results(clone, tmp_path):
    done = run_cron(clone, tmp_path, STUB_STATUS="69")
    assert done.returncode == 69
    log = log_of(clone)
    assert "exit status 69 (missing prerequisite)\n  no new results" in log
    assert log.rstrip().endswith("snaptest: missing packages: edk2-bhyve; run as root")
    assert "run-old" not in log


def test_a_pull_that_fails_runs_nothing_and_exits_69(clone, tmp_path):
    git("remote", "set-url", "origin", str(tmp_path / "no-such-origin.git"), cwd=clone)
    done = run_cron(clone, tmp_path)
    assert done.returncode == 69
    assert not (tmp_path / "calls.log").exists()
    log = log_of(clone)
    assert "exit status 69 (missing prerequisite)\n  no new results" in log
    assert re.search(r"  nightly: git pull --ff-only failed, nothing ran: fatal: .*no-such-origin",
                     log), log


def test_a_night_that_finds_the_lock_held_runs_nothing_and_exits_75(clone, tmp_path):
    with open(tmp_path / "nightly.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = run_cron(clone, tmp_path)
    assert done.returncode == 75
    assert not (tmp_path / "calls.log").exists()
    assert not (clone / "new-file").exists()
    assert "exit status 75 (the previous run still holds the lock); nothing ran" \
        in log_of(clone)


def test_the_verdict_is_mailed_when_nightly_mailto_is_set(clone, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "mail").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >{tmp_path}/mail.args\ncat >{tmp_path}/mail.body\n')
    (tmp_path / "bin" / "mail").chmod(0o755)
    done = run_cron(clone, tmp_path, STUB_STATUS="1", NIGHTLY_MAILTO="a@example.org")
    assert done.returncode == 1
    arguments = (tmp_path / "mail.args").read_text().splitlines()
    assert arguments[0] == "-s"
    assert arguments[1].startswith("bhyve-snaptest nightly on ")
    assert arguments[1].endswith(": exit status 1 (a test failed)")
    assert arguments[2:] == ["a@example.org"]
    assert (tmp_path / "mail.body").read_text().strip() == log_of(clone).strip()
