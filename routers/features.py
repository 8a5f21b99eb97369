"""Gate features from the backbone itself: the prompt's pooled hidden state.

How: the served model's first `layer` decoder layers (plus its final RMSNorm) run once on
the prompt's token ids, exactly the ids the engine will see (the model's chat template
over the routed messages), in fp32 with transformers; the output states are pooled over
the prompt's tokens (`mean` by default; `last`, the state of the final prompt token; or
`mean+last`, both side by side). Truncating the stack keeps the cost a fraction of one
request: the layers above `layer` are never loaded. TWN reads the frozen backbone the
same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from routers.prompt import route_messages

logger = logging.getLogger(__name__)

DEFAULT_LAYER = 4
MAX_FEATURE_TOKENS = 1024
Pooling = Literal["mean", "last", "mean+last"]
POOLINGS: tuple[Pooling, ...] = ("mean", "last", "mean+last")
DEFAULT_POOLING: Pooling = "mean"


def feature_dim(hidden_size: int, pooling: Pooling) -> int:
    """Length of the feature vector: `mean+last` puts two states side by side."""
    return 2 * hidden_size if pooling == "mean+last" else hidden_size


def pool(hidden: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool one prompt's output states (tokens, hidden) into one vector."""
    if pooling == "mean":
        return hidden.mean(dim=0)
    if pooling == "last":
        return hidden[-1]
    return torch.cat([hidden.mean(dim=0), hidden[-1]])


@dataclass(slots=True)
class FeatureExtractor:
    """Loads the truncated backbone once; `features()` is one forward pass per prompt."""

    model_dir: Path
    layer: int = DEFAULT_LAYER
    pooling: Pooling = DEFAULT_POOLING
    _model: Any = field(default=None, init=False)
    _tokenizer: Any = field(default=None, init=False)

    def load(self) -> FeatureExtractor:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused upper layers are reported as unused weights
        try:
            model = AutoModel.from_pretrained(self.model_dir, dtype=torch.float32, num_hidden_layers=self.layer)
        finally:
            hf_logging.set_verbosity(verbosity)
        self._model = model.eval()
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return self

    @property
    def dim(self) -> int:
        return feature_dim(int(self._loaded.config.hidden_size), self.pooling)

    @property
    def _loaded(self) -> Any:
        if self._model is None:
            raise RuntimeError("FeatureExtractor.load() first")
        return self._model

    def prompt_ids(self, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None) -> list[int]:
        """The routed prompt's ids (direct path), as the engine's chat template makes them."""
        rendered = route_messages(messages, tools, think=False)
        ids = self._tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)
        return list(ids)[-MAX_FEATURE_TOKENS:]

    def features(self, messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None) -> torch.Tensor:
        """The truncated backbone's output states pooled over the prompt tokens: shape (dim,)."""
        ids = torch.tensor([self.prompt_ids(messages, tools)])
        with torch.inference_mode():
            hidden = self._loaded(input_ids=ids).last_hidden_state
        return pool(hidden[0], self.pooling).float()
