"""Train one role LoRA adapter on CPU with transformers + peft.

Every role adapter served next to the others must keep the same cacheable shape: LoRA on
`q_proj`, `v_proj` and `o_proj` only (never `k_proj`, so cached keys stay role-free), one
rank for all roles, and one `v_proj` lora_A shared by every role. The reference role trains
that A; every other role copies it from the reference adapter and keeps it frozen, so the
low-rank projection x·A of the values is identical across roles and can be cached once.

The loss covers only the assistant's reply (and its closing end-of-turn token): the
system prompt, the user turn and the chat-template headers are context, not targets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from cache.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
CACHE_TARGET_MODULES: tuple[str, ...] = ("q_proj", "v_proj", "o_proj")
FORBIDDEN_TARGET_MODULES = frozenset({"k_proj"})
SHARED_MODULE = "v_proj"
BASE_MODEL_NAME = "smollm2-135m-instruct"
CHECKPOINT_DIR = "checkpoint"
TRAINER_STATE = "trainer_state.pt"
TRAINING_RECORD = "training.json"
SORT_WINDOW_BATCHES = 8


class ChatMessage(BaseModel):
    """One chat turn as stored in the examples file."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatExample(BaseModel):
    """One JSONL line of training data: a conversation whose assistant turns are the targets."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="Where the example came from, for the record.")
    messages: list[ChatMessage] = Field(min_length=2)

    @model_validator(mode="after")
    def _has_assistant_turn(self) -> ChatExample:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("an example needs at least one assistant turn to learn from")
        return self


class TrainSpec(BaseModel):
    """Everything that determines one adapter training run; also what a checkpoint must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: Path = Field(description="Local Hugging Face model directory.")
    examples: Path = Field(description='JSONL file, one {"messages": [...]} per line.')
    out_dir: Path
    rank: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = CACHE_TARGET_MODULES
    steps: int | None = Field(default=None, ge=1, description="Optimizer steps; wins over epochs.")
    epochs: float = Field(default=3.0, gt=0)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_seq_len: int = Field(default=160, ge=8)
    seed: int = 0
    checkpoint_every: int = Field(default=50, ge=1)
    bf16: bool = Field(
        default=True,
        description="Run forward and backward under bf16 autocast (about 2x faster on CPUs "
        "with AVX-512 BF16 or AMX); weights, LoRA parameters and optimizer stay fp32.",
    )
    frozen_v_proj_a_from: Path | None = Field(
        default=None,
        description="Reference adapter whose v_proj lora_A is copied in and kept frozen.",
    )
    base_model_name: str = Field(
        default=BASE_MODEL_NAME,
        description="Written to adapter_config.json instead of the local model path.",
    )

    @field_validator("target_modules")
    @classmethod
    def _cache_compatible_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        forbidden = FORBIDDEN_TARGET_MODULES.intersection(value)
        if forbidden:
            raise ValueError(
                f"{sorted(forbidden)} must not be adapted: keys are cached once for all roles"
            )
        if not value:
            raise ValueError("target_modules must not be empty")
        return value

    @model_validator(mode="after")
    def _shared_a_needs_v_proj(self) -> TrainSpec:
        if self.frozen_v_proj_a_from is not None and SHARED_MODULE not in self.target_modules:
            raise ValueError(f"frozen_v_proj_a_from needs {SHARED_MODULE!r} in target_modules")
        return self

    def total_steps(self, n_examples: int) -> int:
        """Steps of this run: explicit `steps`, else enough batches to cover `epochs`."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_examples / self.batch_size))

    def fingerprint(self) -> str:
        """Digest of the settings a checkpoint depends on, so a stale one is never resumed."""
        relevant = self.model_dump(mode="json", exclude={"out_dir", "checkpoint_every"})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished run produced; `seconds` includes time spent before a resume."""

    out_dir: Path
    steps: int
    final_loss: float
    seconds: float
    examples: int = 0
    resumed_from_step: int = 0


@dataclass(slots=True)
class _Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass(slots=True)
class _RunState:
    step: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


class CheckpointMismatchError(RuntimeError):
    """A checkpoint exists in the output directory but was made with different settings."""


def load_examples(path: Path) -> list[ChatExample]:
    """Read and validate the JSONL examples file; blank lines are skipped."""
    examples: list[ChatExample] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                examples.append(ChatExample.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path.name}:{lineno}: {exc}") from exc
    if not examples:
        raise ValueError(f"{path.name} holds no examples")
    return examples


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], *, prompt: bool
) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=prompt
    )
    if not isinstance(text, str):
        raise TypeError("apply_chat_template(tokenize=False) did not return text")
    return text


def _tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_labels(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str] | ChatMessage]
) -> tuple[list[int], list[int]]:
    """Token ids of the chat and labels that are -100 everywhere except assistant replies.

    The chat is rendered with the tokenizer's own template and cut at turn boundaries, each
    piece tokenized on its own, so a reply's tokens are exactly what the model would
    generate after the generation prompt. The reply and its end-of-turn token are targets;
    whatever the template adds after that token (ChatML's newline) is context. Turns after
    the last assistant reply teach nothing and are left out.
    """
    turns = [m.model_dump() if isinstance(m, ChatMessage) else dict(m) for m in messages]
    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("the tokenizer has no eos token to close a reply with")
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        prompt = _render(tokenizer, turns[:i], prompt=True)
        through = _render(tokenizer, turns[: i + 1], prompt=False)
        if not prompt.startswith(rendered) or not through.startswith(prompt):
            raise ValueError("the chat template does not render turns as a growing prefix")
        context_ids = _tokens(tokenizer, prompt[len(rendered) :])
        reply_text = through[len(prompt) :]
        end = reply_text.find(eos)
        if end < 0:
            raise ValueError("the chat template did not close the assistant turn with eos")
        reply_ids = _tokens(tokenizer, reply_text[: end + len(eos)])
        tail_ids = _tokens(tokenizer, reply_text[end + len(eos) :])
        input_ids += context_ids + reply_ids + tail_ids
        labels += [IGNORE_INDEX] * len(context_ids) + reply_ids + [IGNORE_INDEX] * len(tail_ids)
        rendered = through
    return input_ids, labels


def _encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample], max_len: int
) -> list[_Encoded]:
    encoded: list[_Encoded] = []
    truncated = 0
    for example in examples:
        ids, labels = build_labels(tokenizer, example.messages)
        if len(ids) > max_len:
            truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if any(label != IGNORE_INDEX for label in labels[1:]):
            encoded.append(_Encoded(ids, labels))
    if truncated:
        logger.warning("%d of %d examples cut to %d tokens", truncated, len(examples), max_len)
    if not encoded:
        raise ValueError("no example keeps any assistant token within max_seq_len")
    return encoded


def _schedule(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Example indices for every step, fixed by the seed so a resumed run sees the same batches.

    Each pass over the data is shuffled, cut into windows of a few batches, and each window
    sorted by length before it is split into batches: on CPU every padding token costs as
    much as a real one. The batches are then shuffled so lengths do not trend within a pass.
    """
    generator = torch.Generator().manual_seed(seed)
    window = batch_size * SORT_WINDOW_BATCHES
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        epoch: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lengths.__getitem__)
            epoch += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [epoch[i] for i in torch.randperm(len(epoch), generator=generator).tolist()]
    return batches[:steps]


def _collate(batch: Sequence[_Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(item.input_ids) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _lora_a(model: torch.nn.Module, module_name: str) -> dict[str, torch.nn.Linear]:
    """The default adapter's lora_A projection of every LoRA layer named `module_name`."""
    from peft.tuners.lora import LoraLayer

    found: dict[str, torch.nn.Linear] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and name.rsplit(".", 1)[-1] == module_name:
            found[name] = cast(torch.nn.Linear, module.lora_A["default"])
    return found


def _freeze_shared_a(model: torch.nn.Module, reference: Path, rank: int) -> int:
    """Copy the reference adapter's v_proj lora_A into the model and stop its gradients."""
    config = json.loads((reference / ADAPTER_CONFIG).read_text())
    if config.get("r") != rank:
        raise ValueError(
            f"reference adapter {reference.name} has rank {config.get('r')}, not {rank}"
        )
    weights = load_file(str(reference / ADAPTER_WEIGHTS))
    projections = _lora_a(model, SHARED_MODULE)
    if not projections:
        raise ValueError(f"the model has no LoRA {SHARED_MODULE} layers to share")
    for name, projection in projections.items():
        key = f"{name}.lora_A.weight"
        if key not in weights:
            raise ValueError(f"reference adapter {reference.name} lacks {key}")
        with torch.no_grad():
            projection.weight.copy_(weights[key].to(projection.weight.dtype))
        projection.weight.requires_grad_(False)
    return len(projections)


def _build_model(spec: TrainSpec) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=torch.float32)
    base.config.use_cache = False
    torch.manual_seed(spec.seed)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    if spec.frozen_v_proj_a_from is not None:
        shared = _freeze_shared_a(model, spec.frozen_v_proj_a_from, spec.rank)
        logger.info(
            "froze %d %s lora_A tensors from %s",
            shared,
            SHARED_MODULE,
            spec.frozen_v_proj_a_from.name,
        )
    return model


def _reply_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over reply tokens only; the 49k-vocab head runs only where loss is taken."""
    causal_lm = model.get_base_model()
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then linear decay to a tenth of the peak rate."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(1, total - warmup)
        return max(0.1, 1.0 - 0.9 * (step - warmup) / span)

    return factor


def _save_checkpoint(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: _RunState,
    spec: TrainSpec,
) -> None:
    """Write the checkpoint beside the old one and swap, so a crash never leaves half of one."""
    final = spec.out_dir / CHECKPOINT_DIR
    staging = spec.out_dir / f"{CHECKPOINT_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging / "adapter", save_embedding_layers=False)
    torch.save(
        {
            "step": state.step,
            "seconds": state.seconds,
            "losses": state.losses,
            "fingerprint": spec.fingerprint(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        },
        staging / TRAINER_STATE,
    )
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def _load_checkpoint(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    spec: TrainSpec,
) -> _RunState | None:
    from peft import set_peft_model_state_dict

    directory = spec.out_dir / CHECKPOINT_DIR
    if not (directory / TRAINER_STATE).is_file():
        return None
    saved = torch.load(directory / TRAINER_STATE, weights_only=True)
    if saved["fingerprint"] != spec.fingerprint():
        raise CheckpointMismatchError(
            f"{directory} was written with different settings; delete it to start over"
        )
    set_peft_model_state_dict(model, load_file(str(directory / "adapter" / ADAPTER_WEIGHTS)))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    return _RunState(step=saved["step"], seconds=saved["seconds"], losses=list(saved["losses"]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_card(spec: TrainSpec, n_examples: int, state: _RunState, final_loss: float) -> str:
    import peft
    import transformers

    shared = (
        f"copied from `{spec.frozen_v_proj_a_from.name}` and frozen"
        if spec.frozen_v_proj_a_from is not None
        else "trained here (reference role)"
    )
    libraries = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}"
    )
    rows = [
        ("base model", spec.base_model_name),
        ("data file", f"`{spec.examples.name}` (sha256 `{_sha256(spec.examples)[:16]}`)"),
        ("examples", str(n_examples)),
        ("steps", str(state.step)),
        ("batch size", str(spec.batch_size)),
        ("learning rate", f"{spec.lr:g}"),
        ("max sequence length", str(spec.max_seq_len)),
        ("seed", str(spec.seed)),
        ("precision", "bf16 autocast, fp32 weights" if spec.bf16 else "fp32"),
        ("rank", str(spec.rank)),
        ("alpha", str(spec.alpha)),
        ("target modules", ", ".join(f"`{m}`" for m in spec.target_modules)),
        (f"`{SHARED_MODULE}` lora_A", shared),
        ("final loss", f"{final_loss:.4f} (mean of the last {min(10, len(state.losses))} steps)"),
        ("train seconds", f"{state.seconds:.1f}"),
        ("libraries", libraries),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return (
        f"# {spec.out_dir.name}\n\n"
        f"LoRA role adapter for {spec.base_model_name}, trained by `agentstack.offline.training`.\n"
        "The loss covers only the assistant replies of the data file.\n\n"
        f"| setting | value |\n|---|---|\n{table}\n"
    )


def _write_adapter(model: Any, spec: TrainSpec, card: str) -> None:
    """Save the final adapter without machine-local paths, then its model card.

    peft keeps target modules as a set, whose order changes between processes; a sorted
    list keeps retrained adapter_config.json files byte-identical.
    """
    config = model.peft_config["default"]
    config.base_model_name_or_path = spec.base_model_name
    config.target_modules = sorted(config.target_modules)
    model.save_pretrained(spec.out_dir, save_embedding_layers=False)
    (spec.out_dir / "README.md").write_text(card, encoding="utf-8")


def _minutes_left(state: _RunState, total: int) -> float:
    """At the pace of the steps so far (resumed runs count their earlier time too)."""
    return state.seconds / max(state.step, 1) * (total - state.step) / 60


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


def _run_record(spec: TrainSpec) -> dict[str, str]:
    """What a finished adapter was made from: the settings, the data and, for a role on a
    frozen v_proj A, that reference adapter's weights (retrained, it makes this one stale)."""
    record = {"fingerprint": spec.fingerprint(), "data_sha256": _sha256(spec.examples)}
    if spec.frozen_v_proj_a_from is not None:
        record["shared_a_sha256"] = _sha256(spec.frozen_v_proj_a_from / ADAPTER_WEIGHTS)
    return record


def _finished_run(spec: TrainSpec) -> TrainResult | None:
    """The run recorded in `out_dir` when it was made from the same settings, data and
    reference adapter, so a rebuild that stopped after some roles does not retrain the
    ones already done. An unreadable record counts as none."""
    record_path = spec.out_dir / TRAINING_RECORD
    if not (record_path.is_file() and (spec.out_dir / ADAPTER_WEIGHTS).is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if any(record.get(key) != value for key, value in _run_record(spec).items()):
            return None
        return TrainResult(out_dir=spec.out_dir, steps=int(record["steps"]),
                           final_loss=float(record["final_loss"]), seconds=float(record["seconds"]),
                           examples=int(record["examples"]))
    except (ValueError, KeyError, TypeError):
        return None


def _record_run(spec: TrainSpec, result: TrainResult) -> None:
    """Written last, whole (a file renamed into place), once the adapter is saved."""
    record = {**_run_record(spec), "steps": result.steps, "final_loss": result.final_loss,
              "seconds": result.seconds, "examples": result.examples}
    staging = spec.out_dir / f"{TRAINING_RECORD}.partial"
    staging.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    staging.replace(spec.out_dir / TRAINING_RECORD)


def train_lora(spec: TrainSpec) -> TrainResult:
    """Train one adapter as `spec` says, resuming from `<out_dir>/checkpoint` when present;
    an adapter already finished with the same settings and data is returned as it is."""
    from transformers import AutoTokenizer

    if (finished := _finished_run(spec)) is not None:
        logger.info("%s: already trained with these settings, kept", spec.out_dir.name)
        return finished
    # The adapter about to be written is not the one any old record describes.
    (spec.out_dir / TRAINING_RECORD).unlink(missing_ok=True)
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    examples = load_examples(spec.examples)
    encoded = _encode_all(tokenizer, examples, spec.max_seq_len)
    total = spec.total_steps(len(encoded))
    batches = _schedule([len(e.input_ids) for e in encoded], spec.batch_size, total, spec.seed)

    model = _build_model(spec)
    model.train()
    params = _trainable(model)
    logger.info(
        "%s: %d examples, %d steps, %d trainable parameters",
        spec.out_dir.name,
        len(encoded),
        total,
        sum(p.numel() for p in params),
    )
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(spec.warmup_steps, total))
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    state = _load_checkpoint(model, optimizer, scheduler, spec) or _RunState()
    resumed_from = state.step
    if resumed_from:
        logger.info("resuming %s from step %d", spec.out_dir.name, resumed_from)

    started = time.perf_counter() - state.seconds
    with _progress() as progress:
        task = progress.add_task(spec.out_dir.name, total=total, completed=state.step, loss="-")
        while state.step < total:
            batch = _collate([encoded[i] for i in batches[state.step]], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.bf16):
                loss = _reply_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.losses.append(loss.item())
            state.seconds = time.perf_counter() - started
            progress.update(task, advance=1, loss=f"{state.losses[-1]:.3f}")
            if state.step % spec.checkpoint_every == 0 and state.step < total:
                _save_checkpoint(model, optimizer, scheduler, state, spec)
                recent = state.losses[-spec.checkpoint_every :]
                logger.info(  # the progress bar draws nothing when the output is a file
                    "%s: checkpoint at step %d/%d, mean loss since last %.4f, about %.0f min left",
                    spec.out_dir.name,
                    state.step,
                    total,
                    sum(recent) / len(recent),
                    _minutes_left(state, total),
                )

    tail = state.losses[-10:]
    final_loss = sum(tail) / len(tail)
    _write_adapter(model, spec, _model_card(spec, len(encoded), state, final_loss))
    shutil.rmtree(spec.out_dir / CHECKPOINT_DIR, ignore_errors=True)
    logger.info(
        "%s: %d steps in %.1f s, final loss %.4f",
        spec.out_dir.name,
        state.step,
        state.seconds,
        final_loss,
    )
    result = TrainResult(
        out_dir=spec.out_dir,
        steps=state.step,
        final_loss=final_loss,
        seconds=state.seconds,
        examples=len(encoded),
        resumed_from_step=resumed_from,
    )
    _record_run(spec, result)
    return result
