"""Fixtures of the e2e tier: expensive trainings that several tests start from, done once.

Session-scoped and never handed out as is: a test that publishes, promotes or writes next to
the folders takes a private copy (``BaseAndAdapter.copy_to(tmp_path)``,
``BaseRun.copy_to(tmp_path)``), so the tests stay independent of each other and of their order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tandem_testing.ci_adapter import BaseAndAdapter
    from tandem_testing.ci_pipeline import BaseRun


@pytest.fixture(scope="session")
def ci_base_and_adapter(tmp_path_factory: pytest.TempPathFactory) -> BaseAndAdapter:
    """The ci base (synthetic catalog minus fresh items) promoted in a registry, and the adapter
    CLI run on it (``test_adapter_ci``, ``test_merge_ci``)."""
    from tandem_testing.ci_adapter import train_base_and_adapter

    return train_base_and_adapter(tmp_path_factory.mktemp("ci-base-adapter"))


@pytest.fixture(scope="session")
def ci_base_pipeline(tmp_path_factory: pytest.TempPathFactory, java_home: object) -> BaseRun:
    """The base pipeline run once on the ci profile (``test_pipeline_base_local`` checks it,
    ``test_pipeline_adapter_local`` continues from a copy); the fusion step needs the JVM."""
    from tandem_testing.ci_pipeline import run_base

    return run_base(tmp_path_factory.mktemp("ci-base-pipeline"))
