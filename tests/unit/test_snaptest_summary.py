"""./snaptest test's verdict over its pytest runs: ``counted`` in the script, run as written.

Each run is counted as passed, none (status 5, nothing selected) or FAILED, and the script
exits with the first failed run's status. A missing ``else`` once listed every failed run as
nothing-selected-and-failed for status 5 only, and let any other failure exit 0.
"""

import re
import subprocess
from pathlib import Path

import pytest

SNAPTEST = Path(__file__).resolve().parents[2] / "snaptest"


def counted_function() -> str:
    """The text of ``counted() { ... }`` in ./snaptest (indented; closed by the first
    line holding only its indented brace)."""
    match = re.search(r"^( *)counted\(\) \{\n.*?^\1\}\n", SNAPTEST.read_text(),
                      re.DOTALL | re.MULTILINE)
    assert match, "./snaptest has no counted() function"
    return match.group(0)


def verdict(*statuses: int) -> tuple[str, str]:
    """Count one run per status the way ./snaptest test does; the summary and the status."""
    runs = "\n".join(f'counted "run {n}" sh -c "exit {s}"' for n, s in enumerate(statuses, 1))
    script = (f'status=0\nran=no\nsummary=""\n{counted_function()}{runs}\n'
              'printf "%s\\n" "$summary"\necho "status=$status ran=$ran"\n')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          check=True)
    *summary, last = done.stdout.strip().splitlines()
    return "\n".join(line.strip() for line in summary if line.strip()), last


@pytest.mark.parametrize(("statuses", "summary", "last"), [
    ((0, 0), "passed  run 1\npassed  run 2", "status=0 ran=yes"),
    ((0, 1, 0), "passed  run 1\nFAILED  run 2 (exit status 1)\npassed  run 3",
     "status=1 ran=yes"),
    ((3, 1), "FAILED  run 1 (exit status 3)\nFAILED  run 2 (exit status 1)",
     "status=3 ran=no"),
    ((5, 0), "none    run 1 (no test selected)\npassed  run 2", "status=0 ran=yes"),
    ((5, 5), "none    run 1 (no test selected)\nnone    run 2 (no test selected)",
     "status=0 ran=no"),
])
def test_each_run_is_counted_and_the_first_failure_is_the_status(statuses, summary, last):
    assert verdict(*statuses) == (summary, last)
