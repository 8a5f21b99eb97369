"""Train the gate as one policy over actions (role set, path) on the measured outcome table.

The table holds every action's runs on every training prompt (the greedy run, plus any
sampled ones), so every action's reward is known, not sampled:

    Semantics:
        R(x, a) = P(correct | x, a) - lam * E[generated tokens | x, a]   # means over a's runs
        pi(. | x) = softmax(head(x))                                      # one logit per action
        J(lam) = mean_x sum_a pi(a | x) * R(x, a)                         # exact: no sampling

The exact objective maximises J. RLOO (ReMix) is the estimator for outcomes sampled
online: M actions drawn from pi, each rewarded by one of its runs drawn at random,
advantage = reward - mean of the other M-1, loss = -mean(advantage * log pi(a | x)). On a
complete table its expected gradient is J's with added variance, so it is trained beside
the exact objective and kept only where it wins on validation.

Model selection runs on folds of the training prompts, stratified by kind. A candidate is
(k: role sets of at most k roles, objective, lam); it is trained on the other folds with
early stopping on J(lam) of the held-out fold, and its deterministic decisions (argmax)
on the held-out folds are pooled: accuracy is the mean P(correct) of the chosen action,
tokens its mean generated tokens. k and lam are chosen among the exact objective's
candidates: the most accurate (within `accuracy_slack`), ties to fewer tokens, then
smaller k, then smaller lam. RLOO is then trained at that k and lam only, and replaces
the exact objective only if it wins there (more accurate, or as accurate with 5% fewer
tokens): one comparison, not a search in which noise wins. The winner is retrained on
every prompt for the median early-stopped number of epochs.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from routers.features import FeatureExtractor
from routers.gate import GATE_FILE, SUPERVISED_GATE_FILE, PolicyHead, action_key, save_gate
from routers.offline.measure import PATHS, TaskOutcomes, role_subsets
from routers.offline.tasks import Task
from routers.prompt import Path_

logger = logging.getLogger(__name__)

GATE_ROLES: tuple[str, ...] = ("assistant", "reasoner", "single")
# Token prices: at 1e-3, 100 more generated tokens must buy 0.1 more P(correct).
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 1e-4, 5e-4, 1e-3, 2e-3)

Action = tuple[tuple[str, ...], Path_]
Objective = Literal["exact", "rloo"]
OBJECTIVES: tuple[Objective, ...] = ("exact", "rloo")


@dataclass(frozen=True, slots=True)
class GateTrainConfig:
    roles: tuple[str, ...] = GATE_ROLES
    hidden: int = 32
    dropout: float = 0.1
    lr: float = 3e-3
    weight_decay: float = 1e-2
    max_epochs: int = 400
    patience: int = 40
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    ks: tuple[int, ...] = (1, 2)
    objectives: tuple[Objective, ...] = OBJECTIVES
    rloo_samples: int = 4
    folds: int = 4
    accuracy_slack: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lambdas or any(lam < 0 for lam in self.lambdas):
            raise ValueError(f"lambdas must be one or more prices >= 0, not {self.lambdas}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be role-set sizes >= 1, not {self.ks}")
        if self.folds < 2:
            raise ValueError("model selection needs at least 2 folds")
        if self.rloo_samples < 2:
            raise ValueError("RLOO needs at least 2 samples per prompt")


def policy_actions(roles: Sequence[str], max_k: int) -> list[Action]:
    """The action space: every role set of 1..max_k roles, each on both paths; cheaper
    first (smaller sets, direct before think), which is also the order ties go to."""
    return [(subset, path) for subset in role_subsets(roles, max_k) for path in PATHS]


@dataclass(slots=True)
class OutcomeTensors:
    """The outcome table over one action space, as tensors: means for the exact
    objective, the runs themselves (padded to the most runs) for RLOO's draws."""

    actions: list[Action]
    kinds: list[str]
    p_correct: torch.Tensor  # (n, A)
    tokens: torch.Tensor  # (n, A) mean generated tokens
    run_correct: torch.Tensor  # (n, A, S)
    run_tokens: torch.Tensor  # (n, A, S)
    run_count: torch.Tensor  # (n, A)

    def reward(self, lam: float) -> torch.Tensor:
        """R(x, a) = P(correct) - lam * tokens, (n, A)."""
        return self.p_correct - lam * self.tokens

    def restrict(self, k: int) -> OutcomeTensors:
        """The same table over the actions of at most k roles."""
        keep = [i for i, (roles, _) in enumerate(self.actions) if len(roles) <= k]
        cols = torch.tensor(keep)
        return OutcomeTensors([self.actions[i] for i in keep], self.kinds, self.p_correct[:, cols],
                              self.tokens[:, cols], self.run_correct[:, cols], self.run_tokens[:, cols],
                              self.run_count[:, cols])


def outcome_tensors(table: Sequence[TaskOutcomes], actions: Sequence[Action]) -> OutcomeTensors:
    """Soft targets from the table: per prompt and action, the mean over its runs.

    Raises:
        ValueError: a prompt lacks an action: the exact objective needs the whole table.
    """
    runs = []
    for row in table:
        missing = [action_key(*a) for a in actions if action_key(*a) not in row.outcomes]
        if missing:
            raise ValueError(f"{row.task_id} was not measured under {', '.join(missing)}; "
                             "measure every action (`agentstack gate train --max-k`)")
        runs.append([row.runs(*a) for a in actions])
    depth = max(len(r) for row in runs for r in row)
    shape = (len(table), len(actions), depth)
    correct, tokens, count = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape[:2], dtype=torch.long)
    for i, row in enumerate(runs):
        for j, outcomes in enumerate(row):
            count[i, j] = len(outcomes)
            for s, o in enumerate(outcomes):
                correct[i, j, s] = float(o.correct)
                tokens[i, j, s] = float(o.generated_tokens)
    return OutcomeTensors(list(actions), [row.kind for row in table], correct.sum(-1) / count,
                          tokens.sum(-1) / count, correct, tokens, count)


def task_features(extractor: FeatureExtractor, tasks: Sequence[Task],
                  on_done: Callable[[], None] | None = None) -> torch.Tensor:
    rows = []
    for task in tasks:
        rows.append(extractor.features(task.messages, task.tools))
        if on_done is not None:
            on_done()
    return torch.stack(rows)


def stratified_folds(kinds: Sequence[str], n_folds: int, seed: int) -> list[torch.Tensor]:
    """Row indices of `n_folds` folds, each kind dealt round the folds in a seeded order,
    so every fold holds about the same share of every kind."""
    generator = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    start = 0
    for kind in dict.fromkeys(kinds):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        for j, p in enumerate(torch.randperm(len(rows), generator=generator).tolist()):
            folds[(start + j) % n_folds].append(rows[p])
        start += len(rows)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds if f]


def exact_objective(logits: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """J: the expected reward of the softmax policy, averaged over prompts."""
    return (torch.softmax(logits, dim=-1) * reward).sum(dim=-1).mean()


def rloo_loss(logits: torch.Tensor, data: OutcomeTensors, rows: torch.Tensor, lam: float, samples: int,
              generator: torch.Generator) -> torch.Tensor:
    """RLOO on stored runs: `samples` actions per prompt from pi, each rewarded by one of
    its runs drawn uniformly, baseline the mean reward of the other draws."""
    log_probs = torch.log_softmax(logits, dim=-1)
    drawn = torch.multinomial(log_probs.detach().exp(), samples, replacement=True, generator=generator)
    counts = data.run_count[rows].gather(1, drawn)
    which = (torch.rand(counts.shape, generator=generator) * counts).long().clamp(max=counts - 1)
    pick = rows[:, None].expand_as(drawn)
    reward = data.run_correct[pick, drawn, which] - lam * data.run_tokens[pick, drawn, which]
    baseline = (reward.sum(dim=1, keepdim=True) - reward) / (samples - 1)
    return -((reward - baseline) * log_probs.gather(1, drawn)).mean()


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread meanwhile: the head's matrices are tiny, and threads only
    contend (on a busy 2-core machine an epoch took about 100 times longer with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(slots=True)
class Fit:
    """A trained head and how long it trained."""

    head: PolicyHead
    epochs: int
    """Epochs trained: the early-stopped best, or the fixed number asked for."""


def fit_policy(x: torch.Tensor, data: OutcomeTensors, rows: torch.Tensor, config: GateTrainConfig, lam: float,
               objective: Objective, *, val_rows: torch.Tensor | None = None, epochs: int | None = None,
               on_step: Callable[[], None] | None = None) -> Fit:
    """Train a fresh head on `rows`: with `val_rows`, stop early on their J(lam) and keep
    the best epoch's weights; without, train exactly `epochs` epochs."""
    if (val_rows is None) == (epochs is None):
        raise ValueError("give either val_rows (early stopping) or epochs")
    with one_thread():
        return _fit(x, data, rows, config, lam, objective, val_rows, epochs, on_step)


def _fit(x: torch.Tensor, data: OutcomeTensors, rows: torch.Tensor, config: GateTrainConfig, lam: float,
         objective: Objective, val_rows: torch.Tensor | None, epochs: int | None,
         on_step: Callable[[], None] | None) -> Fit:
    torch.manual_seed(config.seed)
    head = PolicyHead(x.shape[1], config.hidden, len(data.actions), dropout=config.dropout)
    head.mean.copy_(x[rows].mean(dim=0))
    head.std.copy_(x[rows].std(dim=0).nan_to_num(1.0).clamp(min=1e-4))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    reward = data.reward(lam)
    best_score, best_epoch, best_state = -float("inf"), 0, {k: v.clone() for k, v in head.state_dict().items()}
    for epoch in range(1, (epochs or config.max_epochs) + 1):
        head.train()
        logits = head(x[rows])
        if objective == "exact":
            loss = -exact_objective(logits, reward[rows])
        else:
            loss = rloo_loss(logits, data, rows, lam, config.rloo_samples, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
        if val_rows is None:
            continue
        head.eval()
        with torch.no_grad():
            score = float(exact_objective(head(x[val_rows]), reward[val_rows]))
        if score > best_score + 1e-6:
            best_score, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    if val_rows is not None:
        head.load_state_dict(best_state)
    head.eval()
    return Fit(head, best_epoch if val_rows is not None else epochs or 0)


def decisions(head: PolicyHead, x: torch.Tensor) -> torch.Tensor:
    """The served choice per prompt: the most probable action, ties to the first."""
    with torch.no_grad():
        return head(x).argmax(dim=-1)


@dataclass(frozen=True, slots=True)
class Candidate:
    k: int
    objective: Objective
    lam: float


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """A candidate's decisions on held-out folds, pooled over every training prompt."""

    candidate: Candidate
    accuracy: float
    """Mean P(correct) of the chosen action."""
    tokens: float
    """Mean generated tokens of the chosen action."""
    epochs: int
    """Median early-stopped epochs over the folds."""

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self.candidate), "accuracy": round(self.accuracy, 4), "tokens": round(self.tokens, 2),
                "epochs": self.epochs}


def score_candidate(x: torch.Tensor, data: OutcomeTensors, folds: Sequence[torch.Tensor], config: GateTrainConfig,
                    candidate: Candidate, on_fold: Callable[[], None] | None = None) -> CandidateScore:
    """Train on all folds but one, decide on that one, for every fold."""
    space = data.restrict(candidate.k)
    accuracy, tokens, epochs = 0.0, 0.0, []
    for f, val in enumerate(folds):
        fit_rows = torch.cat([fold for g, fold in enumerate(folds) if g != f])
        fit = fit_policy(x, space, fit_rows, config, candidate.lam, candidate.objective, val_rows=val)
        if on_fold is not None:
            on_fold()
        chosen = decisions(fit.head, x[val])
        accuracy += float(space.p_correct[val, chosen].sum())
        tokens += float(space.tokens[val, chosen].sum())
        epochs.append(max(1, fit.epochs))
    n = sum(len(fold) for fold in folds)
    return CandidateScore(candidate, accuracy / n, tokens / n, int(statistics.median(epochs)))


def select(scores: Sequence[CandidateScore], accuracy_slack: float = 0.0) -> CandidateScore:
    """k and lam among the exact objective's scores (all scores if there are none): most
    accurate on validation (within `accuracy_slack`), then fewest tokens, smaller k,
    smaller lam. Another objective at that k and lam replaces it only if it wins."""
    primary = [s for s in scores if s.candidate.objective == "exact"] or list(scores)
    best = max(s.accuracy for s in primary)
    eligible = [s for s in primary if s.accuracy >= best - accuracy_slack - 1e-9]
    chosen = min(eligible, key=lambda s: (round(s.tokens, 6), s.candidate.k, s.candidate.lam))
    for rival in scores:
        same = (rival.candidate.k, rival.candidate.lam) == (chosen.candidate.k, chosen.candidate.lam)
        if same and rival.candidate.objective != chosen.candidate.objective and _wins(rival, chosen):
            chosen = rival
    return chosen


RIVAL_TOKEN_MARGIN = 0.05
"""An equally accurate rival must spend this share fewer tokens to win: a few hundredths
of a token per prompt is noise between two fits, and a tie goes to the exact objective."""


def _wins(rival: CandidateScore, incumbent: CandidateScore) -> bool:
    """More accurate, or as accurate with clearly fewer tokens."""
    if abs(rival.accuracy - incumbent.accuracy) > 1e-9:
        return rival.accuracy > incumbent.accuracy
    return rival.tokens < incumbent.tokens * (1 - RIVAL_TOKEN_MARGIN)


@dataclass(slots=True)
class PolicyTraining:
    """The selected policy retrained on every prompt, and what selected it."""

    head: PolicyHead
    exact_head: PolicyHead
    """The exact objective at the chosen k and lam: `head` itself unless RLOO won."""
    actions: list[Action]
    chosen: CandidateScore
    exact: CandidateScore
    """The exact objective's validation score at the chosen k and lam."""
    scores: list[CandidateScore] = field(default_factory=list)

    def training_info(self, *, exact: bool = False) -> dict[str, Any]:
        """What `gate.json` records of the training (`exact`: of `exact_head`)."""
        score = self.exact if exact else self.chosen
        return {"method": "policy", **asdict(score.candidate), "epochs": score.epochs,
                "validation": {"accuracy": round(score.accuracy, 4), "tokens": round(score.tokens, 2)},
                "candidates": [s.as_json() for s in self.scores]}


def measured_k(table: Sequence[TaskOutcomes]) -> int:
    """The largest role set the table measured on every prompt."""
    return min(max(len(o.roles) for o in row.outcomes.values()) for row in table)


def train_policy(table: Sequence[TaskOutcomes], x: torch.Tensor, config: GateTrainConfig, *,
                 progress: Callable[[str, int], Callable[[], None]] | None = None) -> PolicyTraining:
    """Select (k, lam, objective, epochs) on folds, then retrain the winner on every prompt."""
    ks = sorted(k for k in set(config.ks) if k <= min(measured_k(table), len(config.roles)))
    if not ks:
        raise ValueError(f"the table measured role sets of {measured_k(table)} roles at most; ks={config.ks}")
    data = outcome_tensors(table, policy_actions(config.roles, max(ks)))
    folds = stratified_folds(data.kinds, min(config.folds, len(table)), config.seed)
    primary: Objective = "exact" if "exact" in config.objectives else config.objectives[0]
    candidates = [Candidate(k, primary, lam) for k in ks for lam in sorted(set(config.lambdas))]
    rivals = [o for o in config.objectives if o != primary]
    tick = progress("select k, lambda, objective on folds", (len(candidates) + len(rivals)) * len(folds)) \
        if progress else None
    scores = [score_candidate(x, data, folds, config, c, tick) for c in candidates]
    chosen = select(scores, config.accuracy_slack)
    scores += [score_candidate(x, data, folds, config, replace(chosen.candidate, objective=o), tick) for o in rivals]
    chosen = select(scores, config.accuracy_slack)
    logger.info("chose %s on validation", chosen.as_json())
    exact = next((s for s in scores if s.candidate == Candidate(chosen.candidate.k, "exact", chosen.candidate.lam)),
                 chosen)
    every = torch.arange(len(table))
    space = data.restrict(chosen.candidate.k)
    steps = chosen.epochs + (exact.epochs if exact is not chosen else 0)
    tick = progress("train on all prompts", steps) if progress else None
    head = fit_policy(x, space, every, config, chosen.candidate.lam, chosen.candidate.objective,
                      epochs=chosen.epochs, on_step=tick).head
    exact_head = head
    if exact is not chosen:
        exact_head = fit_policy(x, space, every, config, exact.candidate.lam, "exact", epochs=exact.epochs,
                                on_step=tick).head
    return PolicyTraining(head, exact_head, space.actions, chosen, exact, scores)


def policy_spec(training: PolicyTraining, config: GateTrainConfig, *, base_model: str, layer: int,
                pooling: str, dim: int) -> dict[str, Any]:
    """The `gate.json` fields of a trained policy (format 2; weights added by `save_gate`)."""
    return {"base_model": base_model, "features": {"layer": layer, "pooling": pooling, "dim": dim},
            "roles": list(config.roles), "top_k": max(len(roles) for roles, _ in training.actions),
            "hidden": config.hidden,
            "actions": [{"roles": list(roles), "path": path} for roles, path in training.actions],
            "training": training.training_info()}


def train_gate(table: Sequence[TaskOutcomes], tasks: Sequence[Task], extractor: FeatureExtractor,
               out_dir: Path, config: GateTrainConfig, *, base_model: str,
               progress: Callable[[str, int], Callable[[], None]] | None = None) -> dict[str, Any]:
    """Features of the table's prompts, the policy trained on them, written as `gate.json`
    (the selected objective) and `gate-supervised.json` (the exact objective at the same
    k and lam, for `eval gate`'s comparison)."""
    started = time.perf_counter()
    by_id = {t.id: t for t in tasks}
    ordered = [by_id[row.task_id] for row in table]
    tick = progress("features", len(ordered)) if progress else None
    feature_start = time.perf_counter()
    x = task_features(extractor, ordered, tick)
    feature_ms = (time.perf_counter() - feature_start) * 1000 / len(ordered)
    training = train_policy(table, x, config, progress=progress)
    runs = sorted({len(row.runs(*action)) for row in table for action in training.actions})
    info = {"prompts": len(table), "runs_per_action": runs, "feature_ms_per_prompt": round(feature_ms, 2),
            "train_seconds": round(time.perf_counter() - started, 1)}
    spec = policy_spec(training, config, base_model=base_model, layer=extractor.layer, pooling=extractor.pooling,
                       dim=int(x.shape[1]))
    save_gate(out_dir, training.head, {**spec, "training": {**spec["training"], **info}}, name=GATE_FILE)
    save_gate(out_dir, training.exact_head, {**spec, "training": {**training.training_info(exact=True), **info}},
              name=SUPERVISED_GATE_FILE)
    return {**info, **training.training_info(), "top_k": spec["top_k"]}
