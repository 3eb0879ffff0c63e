"""Shared test settings: offline, no analytics, each test's MLflow store in its own tmp folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test: tiny tensors gain nothing from more, and OpenMP
    threads spinning on the shared 2-core machine cost more than they bring. Modules take it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A private MLflow tracking database and artifact root for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SORAFLOW_ARTIFACT_ROOT", (tmp_path / "mlartifacts").as_uri())
    return uri


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect database for tests that run flows (started once per session)."""
    from prefect.testing.utilities import prefect_test_harness

    from prefect.logging.configuration import setup_logging

    # Configure Prefect's console handlers now, on the real stderr: otherwise the first flow
    # run of the session sets them up on whatever stream is current, and a flow first run
    # inside click's CliRunner leaves them writing to a stream closed when the runner returns.
    setup_logging()
    with prefect_test_harness(server_startup_timeout=120):
        yield
