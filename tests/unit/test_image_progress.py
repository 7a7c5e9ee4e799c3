"""Build progress on a terminal and in a log: tqdm's bar where someone watches it redraw,
whole lines without carriage returns where it is written to a file (a CI log).

The stream is replaced through common.progress_stream: pytest's capture puts its own
sys.stderr back before each test runs. test_image_freebsd checks the real stderr.
"""

import io

import pytest
from tqdm import tqdm

from bhyve_snaptest.images import common


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def terminal(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(common, "progress_stream", lambda: stream)
    return stream


@pytest.fixture
def log_file(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(common, "progress_stream", lambda: stream)
    return stream


def _download(total, steps):
    with common.progress_bar(total=total, desc="download x.xz") as bar:
        for _ in range(steps):
            bar.update(total // steps if total else 1000)
    return bar


def test_a_terminal_gets_a_tqdm_bar(terminal):
    bar = _download(10 * 1024 * 1024, 100)
    assert isinstance(bar, tqdm)
    assert "\r" in terminal.getvalue() and "download x.xz" in terminal.getvalue()


def test_a_log_gets_a_line_per_tenth_with_bytes_and_share(log_file):
    bar = _download(10 * 1024 * 1024, 80)  # 80 updates of 128 KiB: a line per 8 of them
    assert isinstance(bar, common.PlainProgress)
    text = log_file.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines == [f"download x.xz: {10 * n}% ({n}.00MB of 10.0MB)" for n in range(1, 10)] \
        + ["download x.xz: 100% (10.0MB of 10.0MB)"]


def test_a_log_without_a_total_gets_lines_by_time_and_one_at_the_end(log_file, monkeypatch):
    _download(None, 3)
    assert log_file.getvalue().splitlines() == ["download x.xz: 2.93kB"]
    log_file.truncate(0)
    log_file.seek(0)
    monkeypatch.setattr(common, "PLAIN_PROGRESS_INTERVAL_S", 0.0)
    _download(None, 3)
    assert log_file.getvalue().splitlines() == [
        "download x.xz: 0.98kB", "download x.xz: 1.95kB", "download x.xz: 2.93kB",
        "download x.xz: 2.93kB"]


def test_steps_in_a_log_name_the_step(log_file):
    with common.progress_bar(total=4, desc="linux image abc", unit="step") as bar:
        for name in ("download", "unpack", "initramfs", "finish"):
            bar.set_postfix_str(name)
            bar.update()
    assert log_file.getvalue().splitlines() == [
        "linux image abc: 25% (1/4 step) [download]", "linux image abc: 50% (2/4 step) [unpack]",
        "linux image abc: 75% (3/4 step) [initramfs]",
        "linux image abc: 100% (4/4 step) [finish]"]


def test_a_failed_step_ends_without_a_final_line(log_file):
    with pytest.raises(RuntimeError), \
            common.progress_bar(total=None, desc="decompress", unit="B") as bar:
        bar.update(10)
        raise RuntimeError("broken")
    assert log_file.getvalue() == ""


@pytest.mark.parametrize("stream_fixture", ["terminal", "log_file"])
def test_log_prints_in_both_modes_and_not_when_quiet(request, stream_fixture):
    stream = request.getfixturevalue(stream_fixture)
    common.log(True, "FreeBSD 14.3-RELEASE: https://example.org/x.xz")
    common.log(False, "not shown")
    assert stream.getvalue() == "FreeBSD 14.3-RELEASE: https://example.org/x.xz\n"


def test_quiet_shows_nothing_in_either_mode(terminal):
    with common.progress_bar(total=100, desc="download", enabled=False) as bar:
        bar.update(100)
    assert terminal.getvalue() == ""
