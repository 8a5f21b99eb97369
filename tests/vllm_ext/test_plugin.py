"""The package's vLLM plugin: every engine in the environment gets the grouped ops, on
the vLLM release they were written for only, and switching them off changes no token."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from vllm.lora.ops import torch_ops
from vllm.lora.punica_wrapper import punica_cpu

from agentstack.vllm_ext import plugin
from agentstack.vllm_ext import projection_lora
from agentstack.vllm_ext.grouped_lora import GROUPED_OPS


@pytest.fixture
def stock_ops() -> None:
    plugin.use_grouped_lora(False)
    yield
    plugin.use_grouped_lora(False)


def _uses_stock() -> bool:
    return (all(getattr(punica_cpu, name) is getattr(torch_ops, name) for name in GROUPED_OPS)
            and punica_cpu.PunicaWrapperCPU.add_lora_linear is not projection_lora.add_lora_linear)


def test_plugin_is_a_vllm_entry_point() -> None:
    targets = {e.value for e in metadata.entry_points(group="vllm.general_plugins")}
    assert "agentstack.vllm_ext.plugin:register" in targets


def test_supported_version_installs_the_grouped_ops(stock_ops: None) -> None:
    assert plugin.install_grouped_lora(plugin.SUPPORTED_VLLM_VERSION)
    assert plugin.grouped_lora_in_use()
    assert plugin.install_grouped_lora(plugin.SUPPORTED_VLLM_VERSION + "+cpu")


def test_other_vllm_version_is_left_alone_with_one_warning(stock_ops: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        assert not plugin.install_grouped_lora("0.33.0")
    assert _uses_stock()
    assert len(caplog.records) == 1 and "0.33.0" in caplog.records[0].getMessage()


def test_setting_turns_the_ops_off(stock_ops: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.ENABLE_ENV, "0")
    assert not plugin.install_grouped_lora(plugin.SUPPORTED_VLLM_VERSION)
    assert _uses_stock()


def _probe(check: str, model_dir: Path) -> dict:
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
    env.pop(plugin.ENABLE_ENV, None)
    run = subprocess.run([sys.executable, "-m", "tests.vllm_ext.engine_probe", check, str(model_dir)],
                         capture_output=True, text=True, timeout=600, env=env,
                         cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(out for out in run.stdout.splitlines() if out.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


TIE_NATS = 0.25
"""Two bf16 steps of a logit between 16 and 32 (this model's range): top-two margins this
small are ties at the model's precision, which rounding anywhere upstream may break
either way."""


@pytest.mark.slow
def test_roles_generate_the_same_tokens_with_grouped_and_stock_ops(model_dir: Path) -> None:
    """One batch of the three roles and the base model, greedy, run twice on one engine with
    the same batch composition: the grouped ops change no token, except where vLLM's own
    ops left a tie between the two most likely tokens (the GEMMs sum in another order, so
    a tie may break the other way; a wrong adapter, slice or row changes clear choices)."""
    result = _probe("roles", model_dir)
    assert result["default_grouped"], "the plugin did not reach agentstack's engine worker"
    assert set(result["roles"]) == {"selector", "arguments", "single", None}
    for role, grouped, stock in zip(result["roles"], result["grouped"], result["stock"], strict=True):
        grouped_tokens, stock_tokens = [t for t, _ in grouped], [t for t, _ in stock]
        if role is None:
            assert grouped_tokens == stock_tokens, "a token without an adapter changed"
            continue
        parted = next((i for i, (g, s) in enumerate(zip(grouped_tokens, stock_tokens)) if g != s), None)
        if parted is not None:
            assert stock[parted][1] <= TIE_NATS, (role, parted, stock[parted][1])
        else:
            assert grouped_tokens == stock_tokens, role


@pytest.mark.slow
def test_a_plain_vllm_engine_gets_the_grouped_ops(model_dir: Path) -> None:
    assert _probe("plain", model_dir)["worker_grouped"] == [True]
