"""How the shipped tool roles are trained: one recipe per role, the selector first.

All roles of the family share one frozen `v_proj` lora_A, so they keep the decomposed
cache's shape (no `k_proj`, one shared A; each role trains only its B there, as in
LoRA-FA). The family's A is the shipped selector's: retraining the tool roles keeps it,
so roles trained earlier on it (`reasoner`) stay in the family. On a model without a
shipped family the selector trains A and the others freeze it. Every role gets one pass
over its examples at the same batch size and learning rate, so `single` and
`selector + arguments` get equal training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentstack.config import PACKAGE_DATA
from agentstack.offline.bfcl.training_data import ToolRole, write_role_data
from agentstack.offline.training.lora import TrainResult, TrainSpec, train_lora

REFERENCE_ROLE = ToolRole.SELECTOR
# The shipped family's A lives in the shipped reference adapter.
FAMILY_A_FROM = PACKAGE_DATA / "adapters" / REFERENCE_ROLE.value


@dataclass(frozen=True, slots=True)
class RoleRecipe:
    epochs: float = 1.0
    batch_size: int = 4
    lr: float = 1.5e-3
    rank: int = 16
    alpha: int = 32
    max_seq_len: int = 2048  # the long-toolbox examples run past 1.5k tokens
    warmup_steps: int = 10
    seed: int = 0


RECIPES: dict[ToolRole, RoleRecipe] = {role: RoleRecipe() for role in ToolRole}


def recipe_spec(recipe: RoleRecipe, model_dir: Path, data: Path, out_dir: Path,
                shared_v_a_from: Path | None) -> TrainSpec:
    """One recipe's trainer spec; every role of the family goes through here."""
    return TrainSpec(
        base_model=model_dir,
        examples=data,
        out_dir=out_dir,
        rank=recipe.rank,
        alpha=recipe.alpha,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        warmup_steps=recipe.warmup_steps,
        max_seq_len=recipe.max_seq_len,
        seed=recipe.seed,
        checkpoint_every=25,
        frozen_v_proj_a_from=shared_v_a_from,
    )


def role_spec(
    role: ToolRole, model_dir: Path, data: Path, out_dir: Path, shared_v_a_from: Path | None
) -> TrainSpec:
    return recipe_spec(RECIPES[role], model_dir, data, out_dir, shared_v_a_from)


def build_tool_adapters(
    model_dir: Path, out_root: Path, data_dir: Path, family_a_from: Path | None = FAMILY_A_FROM
) -> list[TrainResult]:
    """Write each role's data and train it on the family's frozen A; with no family
    (`family_a_from` None), the reference role trains A first and the others freeze it."""
    order = [REFERENCE_ROLE, *(r for r in ToolRole if r is not REFERENCE_ROLE)]
    results = []
    for role in order:
        data = data_dir / f"{role.value}.jsonl"
        write_role_data(role, data)
        shared = family_a_from
        if shared is None and role is not REFERENCE_ROLE:
            shared = out_root / REFERENCE_ROLE.value
        results.append(train_lora(role_spec(role, model_dir, data, out_root / role.value, shared)))
    return results


REASONER_ROLE = "reasoner"
# Short chats (~60 tokens): one pass over 800 of them is about 6 minutes on 2 CPU cores.
REASONER_RECIPE = RoleRecipe(max_seq_len=256)
REASONER_PROBLEMS = 400


def build_reasoner_adapter(model_dir: Path, out_root: Path, data_dir: Path) -> TrainResult:
    """The `reasoner` role: worked steps in a think block then `Answer: <n>` on the think
    path, the answer line alone on the direct path; on the selector's frozen v_proj A."""
    from routers.offline.tasks import write_reasoner_data

    data = data_dir / f"{REASONER_ROLE}.jsonl"
    write_reasoner_data(data, REASONER_PROBLEMS)
    spec = recipe_spec(REASONER_RECIPE, model_dir, data, out_root / REASONER_ROLE,
                       out_root / REFERENCE_ROLE.value)
    return train_lora(spec)
