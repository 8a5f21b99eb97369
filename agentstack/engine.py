"""One in-process vLLM V1 async engine shared by every role.

Roles differ only by the LoRA adapter attached to a request, so requests of different
roles are scheduled and batched together by vLLM. Prompts are tokenized here, with the
model's own chat template, and handed to vLLM as token ids: the service and a direct
engine call then see exactly the same tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstack.config import Settings
from agentstack.errors import InvalidRequest
from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from cache.modes import CacheMode

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.outputs import RequestOutput
    from vllm.v1.engine.async_llm import AsyncLLM

    from cache.adapters import SharedA

logger = logging.getLogger(__name__)


class EngineConfigError(ValueError):
    """Settings this engine cannot honour on this machine; the service refuses to start."""


def check_platform(settings: Settings, *, is_cpu: bool) -> None:
    """The shared cache modes are built and verified on the CPU engine only: their KV
    connector reads and writes blocks with a CPU attention helper. Until they are
    verified on a GPU engine, a GPU engine refuses them instead of serving them untested."""
    if not is_cpu and settings.cache.mode is not CacheMode.NON_SHARED:
        raise EngineConfigError(
            f"cache.mode={settings.cache.mode.value} runs on the CPU engine only (its KV connector is not "
            "verified on GPUs yet); use cache.mode=non-shared on this GPU engine"
        )


class AdapterLoadError(InvalidRequest):
    """An adapter directory could not be loaded by the engine (missing, corrupt, wrong shape)."""

    default_param = "lora_path"


# vLLM fuses these checkpoint projections into one module of its own (on models that do).
_FUSED_MODULES = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                  "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}
_LORA_WEIGHT = re.compile(r"\.([A-Za-z0-9_]+)\.lora_(?:A|B|embedding_A|embedding_B)(?:\.weight)?$")


def adapter_modules(adapter_dir: Path) -> set[str]:
    """The projections an adapter has weights for (checkpoint names): from its tensors, or
    from its config's module list when the weights are not in safetensors."""
    from safetensors import safe_open

    weights = adapter_dir / ADAPTER_WEIGHTS
    if weights.is_file():
        with safe_open(str(weights), "pt") as f:
            return {m.group(1) for key in f.keys() if (m := _LORA_WEIGHT.search(key)) is not None}
    listed = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("target_modules")
    return set(listed) if isinstance(listed, list) else set()


def check_adapter_targets(name: str, modules: set[str], target_modules: list[str] | None) -> None:
    """Refuse an adapter with weights on projections the engine does not wrap for LoRA:
    vLLM would load it and silently drop those weights. A projection is wrapped when it,
    or the fused module vLLM builds it into, is listed (vLLM matches both ways)."""
    if target_modules is None:
        return
    targets = set(target_modules)
    outside = {m for m in modules if m not in targets and _FUSED_MODULES.get(m) not in targets}
    if outside:
        raise AdapterLoadError(
            f"cannot load adapter {name!r}: it adapts {', '.join(sorted(outside))}, which this engine does not "
            f"wrap for LoRA (lora_target_modules: {', '.join(target_modules)})"
        )


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt token ids the engine serves for a chat: the model's template, ready for
    the assistant's turn. Also used where only the tokenizer is at hand."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter as the engine knows it: vLLM needs a stable positive integer id."""

    name: str
    int_id: int
    path: Path

    def lora_request(self) -> LoRARequest:
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.name, self.int_id, str(self.path))


@dataclass(slots=True)
class SchedulerSnapshot:
    """Latest scheduler state reported by vLLM's stat-logging hook."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    cache_stats: dict[str, Any] | None = None
    """The shared prefix cache's counters (``cache.stats.stats_payload``), when they changed."""


@dataclass(slots=True)
class Engine:
    """Owns the vLLM `AsyncLLM` and the tokenizer that builds its prompts."""

    settings: Settings
    model_dir: Path
    on_scheduler_stats: Callable[[SchedulerSnapshot], None] | None = None
    _llm: AsyncLLM | None = field(default=None, init=False)
    _tokenizer: Any = field(default=None, init=False)
    _next_adapter_id: int = field(default=1, init=False)
    _shared_a: SharedA | None = field(default=None, init=False)

    @property
    def llm(self) -> AsyncLLM:
        if self._llm is None:
            raise RuntimeError("engine not started")
        return self._llm

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("engine not started")
        return self._tokenizer

    def start(self) -> None:
        """Build the engine. Blocking: loads weights and profiles memory (tens of seconds on CPU)."""
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        check_platform(self.settings, is_cpu=current_platform.is_cpu())
        # vLLM's processes inherit this process's environment.
        os.environ.update(self.engine_env())
        args = AsyncEngineArgs(**self.engine_args())
        stat_loggers = [self._stat_logger_factory()] if self.on_scheduler_stats else None
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=stat_loggers)
        logger.info("engine ready: model %s", self.model_dir.name)

    def engine_env(self) -> dict[str, str]:
        """The environment vLLM's processes need for these settings (also what a
        ``vllm serve`` of the same engine needs)."""
        from agentstack.vllm_ext.plugin import ENABLE_ENV

        return {
            # vLLM's CPU backend reserves one core for the frontend by default; on a small
            # machine the API server is light enough to share it (docs/BENCHMARKS.md).
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
            # Read by this package's vLLM plugin in the engine's processes.
            ENABLE_ENV: "1" if self.settings.grouped_lora else "0",
        }

    def engine_args(self) -> dict[str, Any]:
        """vLLM's engine arguments for these settings (also what ``vllm serve`` needs to
        build the same engine)."""
        from agentstack.vllm_ext.plugin import WORKER_EXTENSION

        return dict(
            model=str(self.model_dir),
            served_model_name=self.settings.served_model_name,
            tokenizer=str(self.model_dir),
            dtype=self.settings.dtype,
            max_model_len=self.settings.max_model_len,
            max_num_seqs=self.settings.max_num_seqs,
            max_num_batched_tokens=self.settings.max_num_batched_tokens,
            enable_lora=True,
            max_loras=self.settings.max_loras,
            max_lora_rank=self.settings.max_lora_rank,
            lora_target_modules=self.settings.lora_target_modules,
            enable_prefix_caching=True,
            kv_cache_memory_bytes=self.settings.kv_cache_space_gib * (1 << 30),
            # The decomposed model picks each token's role B in Python: eager only.
            enforce_eager=self.settings.enforce_eager or self.settings.cache.mode.stores_low_rank,
            seed=self.settings.seed,
            disable_log_stats=False,
            worker_extension_cls=WORKER_EXTENSION,
            **self._cache_engine_args(),
        )

    def _cache_engine_args(self) -> dict[str, Any]:
        """Engine arguments of the shared prefix cache (``settings.cache``).

        non-shared is vLLM alone. full-shared adds the cache's KV connector, with vLLM's
        block size set to the cache's. decomposed adds the connector too and serves the
        decomposed-attention llama (``cache.decomposed_model``, registered by this
        package's vLLM plugin) with the family's shared v_proj lora_A.
        """
        cache = self.settings.cache
        if cache.mode is CacheMode.NON_SHARED:
            return {}
        from vllm.config import KVTransferConfig

        from cache.connector import kv_transfer_config

        args: dict[str, Any] = {"block_size": cache.block_size}
        if cache.mode.stores_low_rank:
            from cache.vllm_plugin import hf_overrides

            self._shared_a = self._resolve_shared_a()
            args["hf_overrides"] = hf_overrides(str(self._shared_a.adapter))
        transfer = kv_transfer_config(
            cache, model_id=self.model_dir.name, redis_url=cache.redis.url or self.settings.redis_url,
            shared_a=self._shared_a,
        )
        args["kv_transfer_config"] = KVTransferConfig(**transfer)
        return args

    def _resolve_shared_a(self) -> SharedA:
        """``cache.shared_a_adapter``, else the largest family of packaged adapters."""
        from agentstack.config import PACKAGE_DATA
        from cache.adapters import SharedA, group_by_shared_a

        configured = self.settings.cache.shared_a_adapter
        if configured is not None:
            return SharedA.of(configured)
        packaged = [p for p in (PACKAGE_DATA / "adapters").iterdir() if (p / ADAPTER_CONFIG).is_file()]
        return SharedA.of(group_by_shared_a(packaged)[0][0])

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    def new_adapter(self, name: str, path: Path) -> Adapter:
        adapter = Adapter(name=name, int_id=self._next_adapter_id, path=path)
        self._next_adapter_id += 1
        return adapter

    async def load_adapter(self, adapter: Adapter) -> None:
        """Load into vLLM's adapter cache now, so a broken adapter fails here, not mid-request.

        In decomposed mode an adapter outside the shared-A family (another v_proj lora_A, a
        merged mixture of roles, LoRA on k_proj) is served with cache blocks of its own.
        """
        try:
            modules = adapter_modules(adapter.path)
        except Exception as e:  # unreadable weights or config: safetensors and json raise their own types
            raise AdapterLoadError(f"cannot load adapter {adapter.name!r}: {e}") from e
        check_adapter_targets(adapter.name, modules, self.settings.lora_target_modules)
        if self._shared_a is not None and not self._shared_a.is_member(adapter.path):
            logger.info("adapter %r is outside the shared-A family of %s: it gets cache blocks of its own",
                        adapter.name, self._shared_a.adapter.name)
        try:
            ok = await self.llm.add_lora(adapter.lora_request())
        except Exception as e:  # vLLM raises assorted types for unreadable adapters
            raise AdapterLoadError(f"cannot load adapter {adapter.name!r}: {e}") from e
        if not ok:
            raise AdapterLoadError(f"engine refused adapter {adapter.name!r}")

    async def unload_adapter(self, adapter: Adapter) -> None:
        await self.llm.remove_lora(adapter.int_id)

    async def check_health(self) -> None:
        await self.llm.check_health()

    async def cached_blocks(self) -> int:
        """Physical KV blocks the engine holds for cached prompt blocks (its block pool,
        through the cache plugin's engine-core utility)."""
        from cache.vllm_plugin import CACHED_BLOCKS_UTILITY

        return int(await self.llm.engine_core.call_utility_async(CACHED_BLOCKS_UTILITY))

    @property
    def dead(self) -> bool:
        """The engine core process is gone (or its output loop died): nothing can recover it here."""
        return self._llm is not None and self._llm.errored

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def text_prompt(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        *,
        request_id: str,
        adapter: Adapter | None = None,
        cache_salt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Stream outputs; closing or cancelling the iterator aborts the engine request.

        `cache_salt` enters the hash of every prefix-cache block (vLLM's and the cache
        connector's): requests of different salts never share cached KV."""
        prompt: dict[str, Any] = {"prompt_token_ids": prompt_ids}
        if cache_salt is not None:
            prompt["cache_salt"] = cache_salt
        stream = self.llm.generate(
            prompt,  # type: ignore[arg-type]
            sampling,
            request_id,
            lora_request=adapter.lora_request() if adapter else None,
        )
        try:
            async for output in stream:
                yield output
        except (asyncio.CancelledError, GeneratorExit):
            await self.llm.abort(request_id)
            raise
        finally:
            await stream.aclose()

    def _stat_logger_factory(self) -> Callable[..., Any]:
        from vllm.v1.metrics.loggers import StatLoggerBase

        callback = self.on_scheduler_stats
        assert callback is not None

        class SchedulerStatsHook(StatLoggerBase):
            """Forwards vLLM's per-step scheduler stats to our metrics."""

            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is not None:
                    callback(
                        SchedulerSnapshot(
                            running=scheduler_stats.num_running_reqs,
                            waiting=scheduler_stats.num_waiting_reqs,
                            kv_cache_usage=scheduler_stats.kv_cache_usage,
                            cache_stats=scheduler_stats.kv_connector_stats,
                        )
                    )

            def log_engine_initialized(self) -> None:
                return None

        return SchedulerStatsHook
