"""Feature detection from bhyve's and bhyvectl's usage text, on samples of each upstream era."""


import pytest
from sample_text import sample

from bhyve_snaptest.bhyve.usage import (
    BhyveFeatures,
    UsageTextError,
    bhyvectl_features_from_usage,
    features_from_usage,
)


@pytest.mark.parametrize(("name", "snapshot", "checkpoint_dir"), [
    ("bhyve-usage-main.txt", True, False),
    ("bhyve-usage-main-nosnapshot.txt", False, False),
    ("bhyve-usage-14.txt", True, False),
    ("bhyve-usage-13.txt", True, False),
    ("bhyve-usage-d34547.txt", True, True),
])
def test_bhyve_samples(name, snapshot, checkpoint_dir):
    assert features_from_usage(sample(name)) == BhyveFeatures(
        snapshot=snapshot, checkpoint_dir_option=checkpoint_dir, rundir_option=None)


def test_synopsis_r_token_is_not_snapshot_support():
    text = sample("bhyve-usage-main-nosnapshot.txt")
    assert "[-r file]" in text  # printed by every build
    assert not features_from_usage(text).snapshot


def test_checkpoint_dir_detected_from_synopsis_token_alone():
    text = sample("bhyve-usage-main.txt").replace("[-s pci]", "[-s pci] [-t dir]")
    assert features_from_usage(text).checkpoint_dir_option


def test_stdout_and_stderr_concatenated():
    assert features_from_usage("\n" + sample("bhyve-usage-main.txt")).snapshot


@pytest.mark.parametrize(("name", "snapshot", "rundir"), [
    ("bhyvectl-usage-main.txt", True, False),
    ("bhyvectl-usage-main-nosnapshot.txt", False, False),
    ("bhyvectl-usage-rundir.txt", True, True),
])
def test_bhyvectl_samples(name, snapshot, rundir):
    features = bhyvectl_features_from_usage(sample(name))
    assert (features.snapshot, features.rundir_option) == (snapshot, rundir)
    assert {"destroy", "force-poweroff", "create"} <= features.options


def test_rundir_known_only_with_bhyvectl_usage():
    bhyve = sample("bhyve-usage-main.txt")
    assert features_from_usage(bhyve).rundir_option is None
    assert features_from_usage(bhyve, sample("bhyvectl-usage-rundir.txt")).rundir_option
    assert features_from_usage(bhyve, sample("bhyvectl-usage-main.txt")).rundir_option is False


def test_rundir_defaults_to_unknown():
    assert BhyveFeatures(snapshot=True, checkpoint_dir_option=False).rundir_option is None


@pytest.mark.parametrize("text", ["", "sh: bhyve: not found\n",
                                  "Usage: bhyvectl --vm=<vmname>\n       [--destroy]\n"])
def test_other_text_is_refused(text):
    with pytest.raises(UsageTextError):
        features_from_usage(text)


def test_bhyve_usage_is_not_bhyvectl_usage():
    with pytest.raises(UsageTextError, match="bhyvectl"):
        bhyvectl_features_from_usage(sample("bhyve-usage-main.txt"))
