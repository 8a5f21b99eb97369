"""The gate file format, deterministic decisions, and a clear error for a bad gate file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from agentstack.api.schemas import RouteResponse
from agentstack.config import PACKAGE_DATA, Settings
from agentstack.service import Service
from routers.features import FeatureExtractor
from routers.gate import (
    GATE_FILE,
    SUPERVISED_GATE_FILE,
    GateHead,
    GateLoadError,
    PolicyHead,
    action_key,
    load_gate,
    save_gate,
)
from routers.serving import AutoRouter

ROLES = ["assistant", "reasoner", "single"]
SHIPPED_GATE = PACKAGE_DATA / "gate" / GATE_FILE
# Every role set of 1 or 2 roles, each on both paths.
ACTIONS = [{"roles": roles, "path": path}
           for roles in (["assistant"], ["reasoner"], ["single"], ["assistant", "reasoner"],
                         ["assistant", "single"], ["reasoner", "single"])
           for path in ("direct", "think")]


def _spec(top_k: int = 1) -> dict[str, object]:
    return {"base_model": "smollm2-135m-instruct", "features": {"layer": 4, "pooling": "mean", "dim": 576},
            "roles": ROLES, "top_k": top_k, "hidden": 8, "think_threshold": 0.5}


def _write_gate(directory: Path, top_k: int = 1) -> Path:
    torch.manual_seed(3)
    head = GateHead(576, 8, len(ROLES))
    return save_gate(directory, head, _spec(top_k))


def _policy_spec(top_k: int = 2) -> dict[str, object]:
    actions = [a for a in ACTIONS if len(a["roles"]) <= top_k]
    return {"base_model": "smollm2-135m-instruct", "features": {"layer": 4, "pooling": "mean", "dim": 576},
            "roles": ROLES, "top_k": top_k, "hidden": 8, "actions": actions}


def _write_policy(directory: Path, top_k: int = 2) -> Path:
    torch.manual_seed(3)
    head = PolicyHead(576, 8, len(_policy_spec(top_k)["actions"]))  # type: ignore[arg-type]
    return save_gate(directory, head, _policy_spec(top_k))


@pytest.mark.parametrize("name", [GATE_FILE, SUPERVISED_GATE_FILE])
def test_the_shipped_gate_loads_and_decides_one_of_its_actions(name: str) -> None:
    """The shipped files are policies over role sets of up to two roles and both paths."""
    gate = load_gate(PACKAGE_DATA / "gate" / name)
    assert gate.spec.format == "agentstack-gate/2" and gate.spec.is_policy and gate.spec.top_k == 2
    assert isinstance(gate.head, PolicyHead) and gate.required_lora_rank == 32
    decision = gate.decide_features(torch.randn(gate.spec.features.dim, generator=torch.Generator().manual_seed(0)))
    assert f"{'+'.join(decision.roles)}|{decision.path}" in decision.action_probs
    assert len(decision.action_probs) == 12 and abs(sum(decision.action_probs.values()) - 1) < 1e-3


def test_a_policy_gate_round_trips_and_decides_one_action(tmp_path: Path) -> None:
    gate = load_gate(_write_policy(tmp_path))
    assert gate.spec.format == "agentstack-gate/2" and gate.required_lora_rank == 32
    assert "think_threshold" not in json.loads((tmp_path / GATE_FILE).read_text())
    x = torch.randn(576, generator=torch.Generator().manual_seed(1))
    decision = gate.decide_features(x)
    assert decision == gate.decide_features(x.clone())
    probs = decision.action_probs
    assert list(probs) == [action_key(a["roles"], a["path"]) for a in ACTIONS]  # type: ignore[arg-type]
    assert abs(sum(probs.values()) - 1) < 1e-6
    assert action_key(decision.roles, decision.path) == max(probs, key=probs.__getitem__)
    assert decision.weights == tuple(1 / len(decision.roles) for _ in decision.roles)
    assert decision.think_prob == pytest.approx(sum(p for k, p in probs.items() if k.endswith("|think")))
    assert decision.role_probs["single"] == pytest.approx(sum(p for k, p in probs.items() if "single" in k))
    header = json.loads(decision.header())
    assert header["action_probs"] and header["roles"] == list(decision.roles)


def test_the_router_serves_a_policy_gate_decision_unchanged(tmp_path: Path) -> None:
    """`AutoRouter.decide` adds only its time; `/v1/route` returns the action probabilities."""
    gate = load_gate(_write_policy(tmp_path))
    x = torch.randn(576, generator=torch.Generator().manual_seed(2))

    class Features:
        def features(self, messages: object, tools: object) -> torch.Tensor:
            return x

    router = AutoRouter(gate=gate, features=Features(), resolver=None)  # type: ignore[arg-type]
    served = router.decide([{"role": "user", "content": "hi"}], None)
    assert replace(served, gate_ms=0.0) == gate.decide_features(x) and served.gate_ms > 0
    response = RouteResponse.model_validate(served.as_dict())
    assert response.action_probs == {k: round(v, 4) for k, v in served.action_probs.items()}


def test_a_policy_gate_keeps_to_the_allowed_roles_and_k(tmp_path: Path) -> None:
    gate = load_gate(_write_policy(tmp_path))
    x = torch.randn(576, generator=torch.Generator().manual_seed(1))
    free = gate.decide_features(x)
    for allowed in (["single"], ["assistant", "single"], ["reasoner"]):
        only = gate.decide_features(x, allowed=allowed)
        assert set(only.roles) <= set(allowed) and only.action_probs == free.action_probs
        best = max((k for k in free.action_probs if set(k.split("|")[0].split("+")) <= set(allowed)),
                   key=free.action_probs.__getitem__)
        assert action_key(only.roles, only.path) == best
    assert len(gate.decide_features(x, top_k=1).roles) == 1
    with pytest.raises(ValueError):
        gate.decide_features(x, allowed=["nobody"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"think_threshold": 0.5}, "needs actions and no think_threshold"),
        ({"actions": None}, "needs actions"),
        ({"actions": []}, "must not be empty"),
        ({"actions": [*ACTIONS[:4], ACTIONS[0]]}, "distinct"),
        ({"actions": [{"roles": ["reasoner", "assistant"], "path": "think"}]}, "sorted"),
        ({"actions": [{"roles": ["critic"], "path": "think"}]}, "not in roles"),
        ({"actions": [{"roles": ["assistant"], "path": "maybe"}]}, "path"),
        ({"top_k": 1}, "largest action has 2 roles"),
        ({"features": {"layer": 4, "pooling": "max", "dim": 576}}, "pooling"),
        ({"features": {"layer": 4, "pooling": "mean+last", "dim": 577}}, "even dim"),
    ],
    ids=["threshold", "no-actions", "empty", "repeated", "unsorted", "unknown-role", "path", "top-k",
         "pooling", "odd-dim"],
)
def test_a_bad_policy_gate_file_is_a_clear_error(tmp_path: Path, change: dict[str, object], message: str) -> None:
    _write_policy(tmp_path)
    spec = json.loads((tmp_path / GATE_FILE).read_text())
    (tmp_path / GATE_FILE).write_text(json.dumps({**spec, **change}))
    with pytest.raises(GateLoadError, match=message):
        load_gate(tmp_path / GATE_FILE)


def test_a_role_gate_file_may_not_name_actions(tmp_path: Path) -> None:
    _write_gate(tmp_path)
    spec = json.loads((tmp_path / GATE_FILE).read_text())
    (tmp_path / GATE_FILE).write_text(json.dumps({**spec, "actions": ACTIONS}))
    with pytest.raises(GateLoadError, match="needs think_threshold and no actions"):
        load_gate(tmp_path / GATE_FILE)


def test_policy_weights_must_fit_the_actions(tmp_path: Path) -> None:
    _write_policy(tmp_path)
    spec = json.loads((tmp_path / GATE_FILE).read_text())
    (tmp_path / GATE_FILE).write_text(json.dumps({**spec, "actions": ACTIONS[:6], "top_k": 1}))
    with pytest.raises(GateLoadError, match="6 actions"):
        load_gate(tmp_path / GATE_FILE)


def test_round_trip_and_deterministic(tmp_path: Path) -> None:
    gate = load_gate(_write_gate(tmp_path, top_k=2))
    x = torch.randn(576, generator=torch.Generator().manual_seed(1))
    first, again = gate.decide_features(x), gate.decide_features(x.clone())
    assert first == again
    assert len(first.roles) == 2 and first.weights == (0.5, 0.5)
    assert abs(sum(first.role_probs.values()) - 1) < 1e-6
    assert first.roles[0] == max(first.role_probs, key=first.role_probs.__getitem__)
    assert first.path == ("think" if first.think_prob >= 0.5 else "direct")
    assert json.loads(first.header())["roles"] == list(first.roles)


def test_allowed_roles_bound_the_choice(tmp_path: Path) -> None:
    """A key restricted to some roles gets the best of those, never another."""
    gate = load_gate(_write_gate(tmp_path, top_k=2))
    x = torch.randn(576, generator=torch.Generator().manual_seed(1))
    free = gate.decide_features(x)
    worst = min(ROLES, key=free.role_probs.__getitem__)
    only = gate.decide_features(x, allowed=[worst])
    assert only.roles == (worst,) and only.weights == (1.0,)
    assert "may use" in only.reason and only.role_probs == free.role_probs
    with pytest.raises(ValueError):
        gate.decide_features(x, allowed=["nobody"])


def test_deterministic_on_real_features(model_dir: Path, tmp_path: Path) -> None:
    """The shipped gate (a seeded one until `make gate` ships it) on the backbone's real
    features: the same prompt gives bit-identical features and the same decision."""
    gate = load_gate(SHIPPED_GATE if SHIPPED_GATE.exists() else _write_gate(tmp_path))
    extractor = FeatureExtractor(model_dir, layer=gate.spec.features.layer).load()
    messages = [{"role": "user", "content": "Ana has 16 stickers. Then Ana gives away 3. Then Ana doubles "
                                            "the number of stickers. How many stickers does Ana have now?"}]
    a, b = extractor.features(messages), extractor.features(messages)
    assert a.shape == (gate.spec.features.dim,)
    assert torch.equal(a, b)
    assert gate.decide_features(a) == gate.decide_features(b)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / GATE_FILE).write_text("{not json"), "invalid gate file"),
        (lambda d: (d / GATE_FILE).write_text(
            (d / GATE_FILE).read_text().replace('"top_k": 1', '"top_k": 9')), "exceeds the 3 roles"),
        (lambda d: (d / GATE_FILE).write_text(
            (d / GATE_FILE).read_text().replace('"format": "agentstack-gate/1"', '"format": "v0"')),
         "invalid gate file"),
        (lambda d: (d / "gate.safetensors").unlink(), "cannot be read"),
        (lambda d: (d / "gate.safetensors").write_bytes(b"garbage"), "do not match the digest"),
        (lambda d: (d / GATE_FILE).write_text(
            (d / GATE_FILE).read_text().replace('"hidden": 8', '"hidden": 9')), "do not fit"),
    ],
    ids=["not-json", "top-k", "format", "no-weights", "digest", "shape"],
)
def test_bad_gate_file_is_a_clear_error(tmp_path: Path, damage: object, message: str) -> None:
    _write_gate(tmp_path)
    damage(tmp_path)  # type: ignore[operator]
    with pytest.raises(GateLoadError, match=message):
        load_gate(tmp_path / GATE_FILE)


async def test_bad_gate_file_stops_service_start(tmp_path: Path, model_dir: Path) -> None:
    """The service refuses to start, naming the file, before Redis or the engine start."""
    _write_gate(tmp_path)
    (tmp_path / "gate.safetensors").write_bytes(b"garbage")
    service = Service(Settings(model=model_dir, cache_dir=tmp_path / "cache"), gate_dir=tmp_path)
    with pytest.raises(GateLoadError, match=str(tmp_path / GATE_FILE)):
        await service.start()
    assert service.engine is None and service.redis is None


async def test_gate_without_its_roles_leaves_auto_off(tmp_path: Path, model_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A roles file of the user's own without the gate's roles still starts: `auto` is off
    and the log says which roles it lacks."""
    roles = tmp_path / "roles.yaml"
    roles.write_text("roles:\n  - name: assistant\n    adapter: null\n", encoding="utf-8")
    _write_gate(tmp_path / "gate")
    service = Service(Settings(model=model_dir, cache_dir=tmp_path / "cache", roles_file=roles,
                               kv_cache_space_gib=1), gate_dir=tmp_path / "gate")
    with caplog.at_level("WARNING", logger="agentstack.service"):
        await service.start()
    try:
        assert service.router is None and list(service.roles) == ["assistant"]
        assert "model `auto` is off" in caplog.text and "reasoner, single" in caplog.text
    finally:
        await service.stop()
