"""Train the gate from measured outcomes: supervised first, then ReMix-style RLOO.

Supervised: the think head learns the TWN labels (binary cross-entropy); the role head
learns, per prompt, a uniform target over the single roles that answered correctly on
the labelled path (cross-entropy; prompts no role answers are left out of this loss).

RLOO (ReMix): for each prompt, M role subsets of size k are sampled from the role head
(Gumbel top-k, i.e. Plackett-Luce without replacement); each subset's reward is the
measured correctness of its uniform mixture on the labelled path. The gradient is

    Semantics:
        A_m = R_m - mean_{j != m} R_j                       # leave-one-out baseline
        loss = -(1/M) sum_m A_m * log pi(S_m | x)           # + the think head's BCE

with log pi of an unordered k-set summed over its orderings. k itself is picked on a
held-out fifth of the training prompts (k=1 or 2), then the gate is retrained on all.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from routers.features import FeatureExtractor
from routers.gate import SUPERVISED_GATE_FILE, GATE_FILE, GateHead, save_gate
from routers.offline.measure import TaskOutcomes, role_subsets
from routers.offline.tasks import Task

logger = logging.getLogger(__name__)

GATE_ROLES: tuple[str, ...] = ("assistant", "reasoner", "single")


@dataclass(frozen=True, slots=True)
class GateTrainConfig:
    roles: tuple[str, ...] = GATE_ROLES
    hidden: int = 64
    dropout: float = 0.1
    supervised_epochs: int = 400
    rloo_steps: int = 300
    samples: int = 4
    lr: float = 1e-3
    rloo_lr: float = 3e-4
    weight_decay: float = 1e-3
    think_threshold: float = 0.5
    ks: tuple[int, ...] = (1, 2)
    val_share: float = 0.2
    seed: int = 0


@dataclass(slots=True)
class TrainingData:
    """Features and the measured reward table, as tensors."""

    x: torch.Tensor  # (n, dim)
    think: torch.Tensor  # (n,) TWN label
    role_target: torch.Tensor  # (n, n_roles) uniform over correct single roles
    has_role_target: torch.Tensor  # (n,) bool
    subsets: list[tuple[str, ...]]
    rewards: torch.Tensor  # (n, n_subsets) correctness on the labelled path


def build_data(table: Sequence[TaskOutcomes], x: torch.Tensor, roles: Sequence[str], max_k: int) -> TrainingData:
    subsets = role_subsets(roles, max_k)
    think = torch.tensor([float(r.think_label) for r in table])
    rewards = torch.zeros(len(table), len(subsets))
    target = torch.zeros(len(table), len(roles))
    for i, row in enumerate(table):
        path = "think" if row.think_label else "direct"
        for j, subset in enumerate(subsets):
            rewards[i, j] = float(row.outcome(subset, path).correct)
        for j, role in enumerate(roles):
            target[i, j] = float(row.outcome((role,), path).correct)
    has = target.sum(dim=1) > 0
    target = torch.where(has[:, None], target / target.sum(dim=1, keepdim=True).clamp(min=1), target)
    return TrainingData(x=x, think=think, role_target=target, has_role_target=has, subsets=subsets,
                        rewards=rewards)


def task_features(extractor: FeatureExtractor, tasks: Sequence[Task],
                  on_done: Callable[[], None] | None = None) -> torch.Tensor:
    rows = []
    for task in tasks:
        rows.append(extractor.features(task.messages, task.tools))
        if on_done is not None:
            on_done()
    return torch.stack(rows)


def _subset_index(data: TrainingData, roles: Sequence[str]) -> dict[tuple[int, ...], int]:
    index = {}
    for j, subset in enumerate(data.subsets):
        index[tuple(sorted(roles.index(r) for r in subset))] = j
    return index


def set_log_prob(log_probs: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """log pi(S) of unordered sets drawn without replacement (Plackett-Luce), summed over
    the orderings of each set. `log_probs` (n, R), `members` (n, k) -> (n,)."""
    k = members.shape[1]
    total = []
    for order in itertools.permutations(range(k)):
        lp = torch.zeros(members.shape[0])
        used = torch.zeros(members.shape[0])
        for position in order:
            chosen = log_probs.gather(1, members[:, position: position + 1]).squeeze(1)
            lp = lp + chosen - torch.log1p(-used.clamp(max=1 - 1e-6))
            used = used + chosen.exp()
        total.append(lp)
    return torch.logsumexp(torch.stack(total), dim=0)


def _supervised_loss(head: GateHead, data: TrainingData, rows: torch.Tensor) -> torch.Tensor:
    role_logits, think_logit = head(data.x[rows])
    loss = F.binary_cross_entropy_with_logits(think_logit, data.think[rows])
    mask = data.has_role_target[rows]
    if mask.any():
        log_probs = F.log_softmax(role_logits[mask], dim=-1)
        loss = loss - (data.role_target[rows][mask] * log_probs).sum(dim=-1).mean()
    return loss


def _rloo_loss(head: GateHead, data: TrainingData, rows: torch.Tensor, k: int, samples: int,
               index: dict[tuple[int, ...], int], generator: torch.Generator) -> tuple[torch.Tensor, float]:
    role_logits, think_logit = head(data.x[rows])
    log_probs = F.log_softmax(role_logits, dim=-1)
    n = rows.shape[0]
    rewards = torch.zeros(n, samples)
    set_lps = torch.zeros(n, samples)
    for m in range(samples):
        gumbel = -torch.log(-torch.log(torch.rand(log_probs.shape, generator=generator).clamp(1e-9, 1 - 1e-9)))
        members = torch.topk(log_probs.detach() + gumbel, k, dim=-1).indices
        cols = torch.tensor([index[tuple(sorted(r))] for r in members.tolist()])
        rewards[:, m] = data.rewards[rows, cols]
        set_lps[:, m] = set_log_prob(log_probs, members)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)
    advantage = rewards - baseline
    loss = -(advantage * set_lps).mean() + F.binary_cross_entropy_with_logits(think_logit, data.think[rows])
    return loss, float(rewards.mean())


def _new_head(data: TrainingData, config: GateTrainConfig, rows: torch.Tensor) -> GateHead:
    torch.manual_seed(config.seed)
    head = GateHead(data.x.shape[1], config.hidden, data.role_target.shape[1], dropout=config.dropout)
    head.mean.copy_(data.x[rows].mean(dim=0))
    head.std.copy_(data.x[rows].std(dim=0).clamp(min=1e-4))
    return head


def train_head(data: TrainingData, config: GateTrainConfig, rows: torch.Tensor, k: int,
               *, on_step: Callable[[], None] | None = None) -> tuple[GateHead, GateHead, dict[str, float]]:
    """Supervised, then RLOO from it; returns (supervised copy, RLOO head, training stats)."""
    head = _new_head(data, config, rows)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    head.train()
    for _ in range(config.supervised_epochs):
        loss = _supervised_loss(head, data, rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step:
            on_step()
    supervised_loss = float(loss.detach())
    supervised = _new_head(data, config, rows)
    supervised.load_state_dict(head.state_dict())
    supervised.eval()

    index = _subset_index(data, list(config.roles))
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.rloo_lr, weight_decay=config.weight_decay)
    mean_reward = 0.0
    for _ in range(config.rloo_steps):
        loss, mean_reward = _rloo_loss(head, data, rows, k, config.samples, index, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step:
            on_step()
    head.eval()
    return supervised, head, {"supervised_loss": round(supervised_loss, 4),
                              "rloo_final_sampled_reward": round(mean_reward, 4)}


def decision_reward(head: GateHead, data: TrainingData, rows: torch.Tensor, k: int,
                    roles: Sequence[str]) -> float:
    """Mean measured correctness of the deterministic top-k role set on each prompt's
    labelled path: this judges the role head; the think head is judged by its labels."""
    index = _subset_index(data, roles)
    with torch.inference_mode():
        role_logits, _ = head(data.x[rows])
    members = torch.topk(role_logits, k, dim=-1).indices.tolist()
    cols = torch.tensor([index[tuple(sorted(m))] for m in members])
    return float(data.rewards[rows, cols].mean())


def train_gate(table: Sequence[TaskOutcomes], tasks: Sequence[Task], extractor: FeatureExtractor,
               out_dir: Path, config: GateTrainConfig, *, base_model: str,
               progress: Callable[[str, int], Callable[[], None]] | None = None) -> dict[str, Any]:
    """Pick k on a held-out fifth, retrain on all, write `gate.json` (RLOO) and
    `gate-supervised.json` (supervised only, for comparison)."""
    started = time.perf_counter()
    by_id = {t.id: t for t in tasks}
    ordered = [by_id[row.task_id] for row in table]
    tick = progress("features", len(ordered)) if progress else None
    feature_start = time.perf_counter()
    x = task_features(extractor, ordered, tick)
    feature_ms = (time.perf_counter() - feature_start) * 1000 / len(ordered)
    data = build_data(table, x, config.roles, max(config.ks))

    generator = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(len(table), generator=generator)
    n_val = max(1, int(math.floor(len(table) * config.val_share)))
    val, fit = perm[:n_val], perm[n_val:]
    steps = config.supervised_epochs + config.rloo_steps
    tick = progress("pick k", steps * len(config.ks)) if progress else None
    val_rewards = {}
    for k in config.ks:
        _, head, _ = train_head(data, config, fit, k, on_step=tick)
        val_rewards[k] = decision_reward(head, data, val, k, config.roles)
    best_k = max(config.ks, key=lambda k: (val_rewards[k], -k))

    tick = progress(f"train k={best_k}", steps) if progress else None
    every = torch.arange(len(table))
    supervised, head, stats = train_head(data, config, every, best_k, on_step=tick)
    info = {
        "prompts": len(table),
        "think_labels": int(data.think.sum()),
        "val_reward_by_k": {str(k): round(v, 4) for k, v in val_rewards.items()},
        "feature_ms_per_prompt": round(feature_ms, 2),
        "train_seconds": round(time.perf_counter() - started, 1),
        **stats,
    }
    common = {"base_model": base_model,
              "features": {"layer": extractor.layer, "pooling": "mean", "dim": int(x.shape[1])},
              "roles": list(config.roles), "top_k": best_k, "hidden": config.hidden,
              "think_threshold": config.think_threshold}
    save_gate(out_dir, head, {**common, "training": {**info, "method": "supervised+rloo"}}, name=GATE_FILE)
    save_gate(out_dir, supervised, {**common, "training": {**info, "method": "supervised"}},
              name=SUPERVISED_GATE_FILE)
    return {**info, "top_k": best_k}
