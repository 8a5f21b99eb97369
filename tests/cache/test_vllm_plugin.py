"""The cache's vLLM plugin: block keys shared across roles only on the vLLM it was written for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from vllm.lora.request import LoRARequest
from vllm.v1.core import kv_cache_utils

from cache.vllm_plugin import SUPPORTED_VLLM_VERSION, install_shared_block_keys, shared_block_keys_installed


def _request(lora: LoRARequest | None) -> SimpleNamespace:
    return SimpleNamespace(lora_request=lora, mm_features=[], cache_salt="tenant-a", prompt_embeds=None)


@pytest.fixture
def stock_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test installs is undone after it."""
    monkeypatch.setattr(kv_cache_utils, "_gen_lora_extra_hash_keys", kv_cache_utils._gen_lora_extra_hash_keys)


def test_roles_get_the_same_block_keys_once_installed(stock_keys: None) -> None:
    selector = _request(LoRARequest("selector", 1, "/adapters/selector"))
    arguments = _request(LoRARequest("arguments", 2, "/adapters/arguments"))

    def keys(request: SimpleNamespace) -> tuple | None:
        return kv_cache_utils.generate_block_hash_extra_keys(request, 0, 16, 0)[0]

    assert keys(selector) != keys(arguments), "vLLM keys blocks by adapter"
    assert install_shared_block_keys(SUPPORTED_VLLM_VERSION + "+cpu")
    assert shared_block_keys_installed()
    assert keys(selector) == keys(arguments) == keys(_request(None)) == (("cache_salt", "tenant-a"),)


def test_another_vllm_release_keeps_its_own_keys(stock_keys: None, caplog: pytest.LogCaptureFixture) -> None:
    assert not install_shared_block_keys("0.33.0")
    assert not shared_block_keys_installed()
    assert "written for vLLM" in caplog.text


def test_an_adapter_that_cannot_share_keeps_vllms_keys(stock_keys: None) -> None:
    family = _request(LoRARequest("selector", 1, "/adapters/selector"))
    outside = _request(LoRARequest("mixture", 2, "/adapters/mixture"))

    def keys(request: SimpleNamespace) -> tuple | None:
        return kv_cache_utils.generate_block_hash_extra_keys(request, 0, 16, 0)[0]

    stock_outside = keys(outside)
    assert install_shared_block_keys(
        SUPPORTED_VLLM_VERSION, shares=lambda r: r.lora_request is None or r.lora_request.lora_name != "mixture"
    )
    assert keys(family) == keys(_request(None)) == (("cache_salt", "tenant-a"),)
    assert keys(outside) == stock_outside != keys(family)
    # Installing again (another engine in this process) wraps vLLM's keys, not our own.
    assert install_shared_block_keys(SUPPORTED_VLLM_VERSION)
    assert keys(outside) == keys(family)
