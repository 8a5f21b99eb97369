"""A GPU engine refuses the shared cache modes until they are verified there."""

from __future__ import annotations

import pytest

from agentstack.config import Settings
from agentstack.engine import EngineConfigError, check_platform


@pytest.mark.parametrize("mode", ["full-shared", "decomposed"])
def test_gpu_engine_refuses_shared_cache_modes(mode: str) -> None:
    settings = Settings(cache={"mode": mode})
    with pytest.raises(EngineConfigError, match="non-shared"):
        check_platform(settings, is_cpu=False)
    check_platform(settings, is_cpu=True)


def test_gpu_engine_serves_the_non_shared_mode() -> None:
    check_platform(Settings(), is_cpu=False)
