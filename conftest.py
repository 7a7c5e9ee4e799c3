"""The harness's plugin comes from the installed package (pyproject.toml's pytest11 entry
point, bhyve_snaptest.plugin, which loads its parts): ./snaptest setup installs it into .venv.
Without it, say so instead of failing on unknown fixtures and options."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("bhyve_snaptest.plugin"):
        raise pytest.UsageError("the bhyve-snaptest plugin is not installed in this Python "
                                "environment: run ./snaptest setup, then .venv/bin/pytest")
