"""--matrix: which VM configurations the seed and cycles scenarios run, and their ids."""

import itertools

from bhyve_snaptest.config import DISK_MODELS, NIC_MODELS
from bhyve_snaptest.matrix import CPU_COUNTS, MEMORY_SIZES, VMConfiguration, configurations, full

pytest_plugins = ["pytester"]

SEED = VMConfiguration("ahci-hd", "virtio-net", "256M", 1)
AXES = (DISK_MODELS, NIC_MODELS, MEMORY_SIZES, CPU_COUNTS)


def every_pair() -> set:
    """Every pair of values of two different axes."""
    return {((i, a), (j, b)) for (i, values_i), (j, values_j)
            in itertools.combinations(enumerate(AXES), 2)
            for a in values_i for b in values_j}


def test_full_is_the_cartesian_product():
    configs = full()
    assert len(configs) == len(set(configs)) == 3 * 2 * 2 * 2
    assert {c.disk_model for c in configs} == set(DISK_MODELS)


def test_quick_covers_every_pair_of_values_starting_with_the_seed():
    quick = configurations("quick", SEED)
    assert quick[0] == SEED
    assert set().union(*(c.pairs() for c in quick)) == every_pair()
    # 3 disk models x 2 NICs must each appear together: no fewer than 6 configurations.
    assert len(quick) == 6
    assert quick == configurations("quick", SEED), "the same set on every run and host"


def test_quick_from_another_start_still_covers_every_pair():
    start = VMConfiguration("nvme", "e1000", "1G", 2)
    quick = configurations("quick", start)
    assert quick[0] == start
    assert set().union(*(c.pairs() for c in quick)) == every_pair()


def test_seed_is_the_options_configuration_alone():
    assert configurations("seed", SEED) == [SEED]
    assert SEED.id == "ahci-hd-virtio-net-256M-1cpu"
    assert VMConfiguration("nvme", "e1000", "1G", 2).memory_mb == 1024


INNER = """
    import pytest

    @pytest.mark.matrix
    def test_matrixed(vm_configuration):
        assert vm_configuration.memory in ("256M", "1G")

    def test_plain():
        pass
"""


def collect(pytester, *options):
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest("-p", "bhyve_snaptest.matrix", "-p", "bhyve_snaptest.plugin",
                              "-o", "markers=matrix", "-p", "no:cacheprovider",
                              "--collect-only", "-q", *options)


def test_a_quick_matrix_names_each_configuration_in_the_test_id(pytester):
    outcome = collect(pytester, "--matrix", "quick")
    # ("?" for the brackets, which fnmatch reads as a character class)
    outcome.stdout.fnmatch_lines(["test_inner.py::test_matrixed?ahci-hd-virtio-net-256M-1cpu?",
                                  "test_inner.py::test_matrixed?nvme-*",
                                  "test_inner.py::test_plain", "7 tests collected*"])


def test_the_seed_matrix_keeps_the_plain_test_id(pytester):
    outcome = collect(pytester)
    outcome.stdout.fnmatch_lines(["test_inner.py::test_matrixed", "test_inner.py::test_plain",
                                  "2 tests collected*"])


def test_a_matrix_and_a_fixed_device_option_is_a_usage_error(pytester):
    outcome = collect(pytester, "--matrix", "full", "--disk-model", "nvme")
    assert outcome.ret == 4
    outcome.stderr.fnmatch_lines(["*--matrix full sets the VM's devices*drop --disk-model "
                                  "nvme*"])
