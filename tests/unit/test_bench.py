"""bhyve-snaptest bench without VMs: the disk measurement, the phase table, the ratios to
the disk's limits, what is printed, and its usage errors. (The whole command ran against
QEMU for issue 15's closing note; a run of five seed scenarios is not a unit test.)"""

import pytest

from bhyve_snaptest import bench
from bhyve_snaptest.cli import main
from bhyve_snaptest.errors import ConfigError, ExitStatus, HarnessError
from bhyve_snaptest.report.model import TestRecord

MB = 1_000_000


def record(**metrics) -> TestRecord:
    return TestRecord("tests/scenarios/test_suspend_restore.py::test_x", "passed",
                      folder="f", metrics=metrics)


def test_the_disk_is_written_synced_and_read_back_and_the_file_is_gone(tmp_path):
    limits = bench.measure_disk(tmp_path / "state", 3 * bench.CHUNK_BYTES // 2)
    assert limits.size_bytes == 3 * bench.CHUNK_BYTES // 2
    assert limits.write_fsync_s > 0 and limits.read_s > 0
    assert limits.write_bytes_per_s == limits.size_bytes / limits.write_fsync_s
    assert limits.read_from.startswith("disk")
    assert list((tmp_path / "state").iterdir()) == []


def test_off_linux_the_read_is_not_claimed_to_be_from_the_disk(tmp_path, monkeypatch):
    """FreeBSD's vop_stdadvise() only deactivates the pages posix_fadvise names."""
    monkeypatch.setattr(bench.sys, "platform", "freebsd14")
    limits = bench.measure_disk(tmp_path, bench.CHUNK_BYTES)
    assert limits.read_from.startswith("disk or memory"), limits.read_from


def test_a_disk_cannot_be_measured_without_a_size(tmp_path):
    with pytest.raises(HarnessError, match="no checkpoint size"):
        bench.measure_disk(tmp_path, 0)


def test_guest_commands_are_counted_from_the_commands_log(tmp_path):
    (tmp_path / "commands.log").write_text(
        "2026-12-05T05:34:09.153+00:00 qemu-system-x86_64 -name x\n"
        "2026-12-05T05:34:21.299+00:00 guest$ uname -a\n"
        "2026-12-05T05:34:21.324+00:00 guest$ dmesg | grep -E 'guest$ '\n"
        "2026-12-05T05:34:22.000+00:00 qmp: {\"execute\": \"quit\"}\n")
    assert bench.guest_commands(tmp_path) == 2
    assert bench.guest_commands(tmp_path / "none") == 0


def test_phases_are_spread_over_the_runs_that_have_them():
    runs = [record(suspend_s=1.0, total_s=60.0, checkpoint_bytes=200 * MB),
            record(suspend_s=3.0, total_s=70.0, checkpoint_bytes=200 * MB),
            record(suspend_s=2.0, total_s=65.0, checkpoint_bytes=200 * MB, vm={"a": 1})]
    table = bench.phase_table(runs)
    assert table["suspend_s"] == {"min": 1.0, "median": 2.0, "max": 3.0, "stdev": 1.0}
    assert table["total_s"]["median"] == 65.0
    assert "boot_to_ssh_s" not in table and "vm" not in table
    assert list(table)[-1] == "checkpoint_bytes"


def test_suspend_and_restore_are_read_against_the_disks_limits():
    # 100 MB/s write, 200 MB/s read: 200 MB take 2 s to write, 1 s to read.
    limits = bench.DiskLimits("/state", 200 * MB, 2.0, 1.0, "disk")
    runs = [record(suspend_s=3.0, restore_s=0.5, checkpoint_bytes=200 * MB),
            record(suspend_s=2.0, restore_s=1.5, checkpoint_bytes=200 * MB),
            record(suspend_s=9.0)]  # no checkpoint size: not a ratio
    ratios = bench.limit_ratios(runs, limits)
    assert ratios["suspend_vs_write_limit"]["median"] == 1.25
    assert ratios["restore_vs_read_limit"] == {"min": 0.5, "median": 1.0, "max": 1.5,
                                               "stdev": 0.707}


def test_the_printout_names_the_hypervisor_the_phases_and_the_disk():
    result = {"runs": 5, "passed": 4, "hypervisor": "bhyve (emulated: QEMU inside)",
              "phases": {"suspend_s": {"median": 0.5, "min": 0.4, "max": 0.9, "stdev": 0.2},
                         "checkpoint_bytes": {"median": 241e6, "min": 240e6, "max": 242e6,
                                              "stdev": 1e6}},
              "disk": {"directory": "/var/tmp/x", "size_bytes": 240 * MB, "read_from": "disk",
                       "write_bytes_per_s": 480 * MB, "read_bytes_per_s": 960 * MB},
              "ratios": {"suspend_vs_write_limit": {"median": 1.0, "min": 0.8, "max": 1.8}}}
    out = bench.lines(result)
    assert out[0] == ("bench: 4 of 5 runs passed (bhyve (emulated: QEMU inside)); medians "
                      "over the passed runs")
    assert out[2].split() == ["suspend_s", "0.500", "0.400", "0.900", "0.200"]
    assert out[3].split() == ["checkpoint_MB", "241.000", "240.000", "242.000", "1.000"]
    assert out[4] == ("disk at /var/tmp/x, 240 MB: write with fsync 480 MB/s, read 960 MB/s "
                      "from disk")
    assert out[5] == "  suspend_vs_write_limit: median 1.00 (min 0.80, max 1.80)"


def test_the_seed_runs_in_one_pytest_with_repeat(tmp_path):
    command = bench.seed_command(5, tmp_path, ["--hypervisor", "qemu"])
    assert command[1:] == ["-m", "pytest", "-p", "no:cacheprovider", bench.SEED_TEST,
                           "--repeat", "5", "--results-dir", str(tmp_path),
                           "--hypervisor", "qemu"]
    with pytest.raises(ConfigError, match="bad --runs 0"):
        bench.seed_command(0, tmp_path, [])


def test_bad_runs_is_a_usage_error_and_nothing_runs(tmp_path, capsys):
    assert main(["bench", "--runs", "0", "--output", str(tmp_path / "b")]) == \
        ExitStatus.USAGE_ERROR
    assert "bad --runs 0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
