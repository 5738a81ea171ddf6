"""Local-only loading makes no network call: a Janus-Pro model found in the Hugging Face cache by its short name,
or in a directory, loads with every socket connection and DNS lookup refused (HF_HUB_OFFLINE not set)."""
import socket

import pytest

from rehearsal_assets import apply_env, write_janus


def _no_network(*args, **kwargs):
    raise AssertionError(f"network call during a local-only load: {args[:2]}")


@pytest.mark.slow
def test_janus_from_cache_and_directory_without_network(tmp_path, monkeypatch):
    from common.janus import HUB_IDS
    from common.models import load_model

    cache = tmp_path / "hub"
    write_janus(str(cache))
    apply_env(monkeypatch, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    bk = load_model("janus-pro-1b")  # by short name: the cache only
    assert bk.num_tokens > 0
    snapshot = next((cache / ("models--" + HUB_IDS["janus-pro-1b"].replace("/", "--")) / "snapshots").iterdir())
    assert load_model(str(snapshot)).num_tokens == bk.num_tokens  # a directory
