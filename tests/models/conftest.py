"""Fixtures for the models tests: a local hub (local_hub.py), the config, temporary kit directories."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest
from local_hub import FILENAME, FIXTURE, HubHandler, HubState

from moebench import config


@pytest.fixture
def hub(monkeypatch):
    """A running local hub serving the micro GGUF; HF_ENDPOINT points at it."""
    state = HubState(files={FILENAME: FIXTURE.read_bytes()})
    handler = type("Handler", (HubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cfg():
    return config.load_config()


@pytest.fixture(scope="module")
def module_cfg():
    """The config once per module, for module-scoped fixtures (builds, replicas)."""
    return config.load_config()


@pytest.fixture
def kit_dirs(tmp_path, monkeypatch):
    """models/ and data/processed/ in a temporary directory."""
    from moebench import paths

    models, processed = tmp_path / "models", tmp_path / "processed"
    monkeypatch.setenv("MOEBENCH_MODELS", str(models))
    monkeypatch.setattr(paths, "processed_dir", lambda: processed)
    return models, processed
