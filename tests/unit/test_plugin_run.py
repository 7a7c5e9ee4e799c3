"""The plugin's run-level behaviour, through an inner pytest (pytester): a vanished run
directory is a clear failure, never a traceback from teardown."""

pytest_plugins = ["pytester"]


def test_a_vanished_run_directory_fails_the_run_with_a_clear_message(pytester, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner="""
        import shutil

        def test_someone_removes_the_run_directory(run_ledger, tmp_path):
            shutil.rmtree(run_ledger.run_dir)
            run_ledger.record_path(tmp_path / "scratch")
    """)
    outcome = pytester.runpytest("-p", "bhyve_snaptest.plugin", "--results-dir",
                                 str(tmp_path / "results"), "-p", "no:cacheprovider")
    outcome.assert_outcomes(failed=1)
    assert outcome.ret == 1
    text = outcome.stdout.str()
    outcome.stdout.fnmatch_lines(["*RunDirectoryVanished: the run directory * vanished while "
                                  "this run was using it (recording path)*"])
    outcome.stdout.fnmatch_lines(["bhyve-snaptest: error: the run directory * vanished while "
                                  "this run was using it (closing the run)*"])
    assert "INTERNALERROR" not in text and "FileNotFoundError" not in text


def test_only_a_test_marked_copy_source_gets_a_source_of_the_size_asked(pytester, tmp_path,
                                                                       monkeypatch):
    """vm_spec: unmarked 0 (the guest makes its own), marked --copy-size, or the marker's."""
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    image = tmp_path / "image"
    image.mkdir()
    (image / "manifest.json").write_text('{"name": "linux", "disk": "disk.img"}')
    pytester.makepyfile(test_inner="""
        import pytest

        def test_unmarked(vm_spec):
            assert vm_spec.copy_source_bytes == 0

        @pytest.mark.copy_source
        def test_marked(vm_spec):
            assert vm_spec.copy_source_bytes == 64 * 1024 * 1024

        @pytest.mark.copy_source(size=4096)
        def test_marked_with_a_size(vm_spec):
            assert vm_spec.copy_source_bytes == 4096
    """)
    outcome = pytester.runpytest("-p", "bhyve_snaptest.plugin", "--results-dir",
                                 str(tmp_path / "results"), "-p", "no:cacheprovider",
                                 "--image", str(image), "--copy-size", "64M",
                                 "--hypervisor", "qemu")
    outcome.assert_outcomes(passed=3)
