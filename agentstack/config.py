"""Service settings, read once at start from `AGENTSTACK_*` variables and an optional YAML file.

Precedence, highest first: keyword arguments (the CLI's flags), environment variables,
the YAML file named by `AGENTSTACK_CONFIG`, then the defaults below. Everything else
in the package receives a `Settings` instance; nothing reads the environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from cache.modes import CacheConfig

PACKAGE_DATA = Path(__file__).parent / "data"
DEFAULT_ROLES_FILE = PACKAGE_DATA / "roles.yaml"


def default_cache_dir() -> Path:
    """Where prepared models and embedded Redis data live: outside any checkout, shared by all."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentstack"


class Settings(BaseSettings):
    """Everything a deployment can change. Field names map to `AGENTSTACK_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTACK_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    cache_dir: Path = Field(default_factory=default_cache_dir)
    model: Path | None = Field(
        default=None,
        description="Local Hugging Face model directory; unset serves the packaged SmolLM2-135M.",
    )
    served_model_name: str = "smollm2-135m-instruct"
    roles_file: Path = DEFAULT_ROLES_FILE
    adapters_root: Path | None = Field(
        default=None,
        description="Directory that runtime-loaded adapters must live under; "
        "unset means <cache_dir>/adapters.",
    )

    graphs_file: Path | None = Field(
        default=None,
        description="Registry of users' LangGraph graphs (the langgraph.json shape: "
        '{"graphs": {id: "module:attribute"}}), served beside the built-in graphs.',
    )

    redis_url: str | None = Field(
        default=None, description="Unset starts an embedded Redis server on loopback."
    )
    redis_prefix: str = "agentstack"

    # Engine
    dtype: str = "bfloat16"
    max_model_len: int = Field(default=2048, ge=128)
    max_num_seqs: int = Field(default=32, ge=1)
    max_loras: int = Field(default=4, ge=1)
    max_lora_rank: int = Field(default=16, ge=1)
    kv_cache_space_gib: int = Field(default=2, ge=1)
    max_num_batched_tokens: int | None = Field(
        default=None, ge=1, description="Tokens one engine step may schedule; unset: vLLM's default.")
    lora_target_modules: list[str] | None = Field(
        default=["q_proj", "v_proj", "o_proj"],
        description="Projections the engine wraps for LoRA (checkpoint names such as `q_proj`, `v_proj`, "
        "`o_proj`, `gate_proj`, `down_proj`, or vLLM's fused `qkv_proj`, `gate_up_proj`); null wraps every "
        "one the model supports. Each wrapped projection costs every decode step its LoRA ops, even for "
        "adapters without weights there; an adapter with weights elsewhere is refused at load.",
    )
    enforce_eager: bool = True
    grouped_lora: bool = Field(
        default=True,
        description="Grouped LoRA ops on the CPU engine (one matrix product per adapter; "
        "off: vLLM's own per-token ops, for comparison).",
    )
    seed: int = 0
    cache: CacheConfig = Field(
        default_factory=CacheConfig,
        description="Prefix cache shared across roles: `mode` non-shared (vLLM alone), "
        "full-shared (KV connector, memory then Redis tier) or decomposed (K, V_base and x·A shared; "
        "each role adds its own B).",
    )

    # Tool calling
    tool_shortlist_size: int | None = Field(
        default=None, ge=0,
        description="`model: tool-calling` ranks a toolbox by relevance to the request (BM25+) and cuts one of "
        "more than six functions to this many before its roles read it; 0 reads every listing as the caller "
        "gave it; unset: the measured default, 3 (docs/TOOL_ROLES.md).")

    # Authentication
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys (JSON list): plain keys or `sha256:<hex>` digests, each with full access.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="Key file: one key (or `sha256:<hex>`) per line, or YAML with per-key roles and graphs.",
    )
    auth_required: bool | None = Field(
        default=None,
        description="Unset: keys are required unless the server binds to loopback only.",
    )

    # Request limits
    max_tokens_cap: int = Field(default=1024, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_concurrency_per_key: int = Field(
        default=16, ge=1, description="Generation requests one key may have running at once.")
    max_queue_per_key: int = Field(
        default=64, ge=0, description="Generation requests of one key waiting for a slot; beyond, 429.")
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="A generation request or run still open after this is ended (504).")
    run_lease_s: float = Field(
        default=15.0, ge=1.0,
        description="Graph runs are leased to their replica, renewed every third of this; "
        "a run whose replica stopped renewing ends as an error this long after.")
    run_retention_s: float = Field(
        default=3600.0, gt=0, description="How long a finished run's events and result stay readable.")
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish before the engine stops.")

    # Connections
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A connection that has not sent a whole request head within this is closed.")
    keepalive_timeout_s: float = Field(
        default=5.0, gt=0, description="An idle kept-alive connection is closed after this.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("AGENTSTACK_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def resolved_adapters_root(self) -> Path:
        return (self.adapters_root or self.cache_dir / "adapters").resolve()

    @property
    def redis_dir(self) -> Path:
        return self.cache_dir / "redis"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"
