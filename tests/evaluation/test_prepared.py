"""Prepared evaluation (tuning trials): encode once, wrap once, write merges in place; scores equal evaluate()'s.

Scores are compared with ``==`` (bit for bit), on perplexity (a continuous score, so any difference in the
forward shows) as well as on accuracy and generation. Guards check that the merges do change the scores, so an
equality cannot come from an adapter that was never applied.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytest
import torch

from adamergex.errors import ConfigError, IncompatibleAdaptersError
from adamergex.evaluation import AdapterSlot, PreparedEvaluation, evaluate
from adamergex.merging import merge
from adamergex.task import get_task
from adamergex.tiny import tiny_llama, train_tokenizer
from adamergex.tuning import evaluation_objective, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)
BASE = "tiny-world"
LANGS = ["src", "lex"]
T_VALUES = (1.0, 0.0, 0.37, 1.6, 2.0)


class CountingTokenizer:
    """A tokenizer that counts how often it tokenises (``__call__``); everything else is the wrapped one's."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._tok(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tok)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


@pytest.fixture(scope="module")
def tok() -> Any:
    texts = []
    for name in ("world_nli", "world_reference", "world_arith"):
        task = get_task(name)
        for lang in LANGS:
            texts += [ex.prompt + " " + " ".join(ex.choices + ex.references)
                      for ex in map(task.format, task.load(lang, "validation", limit=8).to_list())]
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture
def model(tok: Any) -> Any:
    return tiny_llama(len(tok), seed=0, name_or_path=BASE)


def make_adapter(model: Any, kind: str, seed: int, *, head: bool = False) -> Any:
    from peft import IA3Config, LoraConfig, get_peft_model

    from adamergex.io import state_from_peft_model

    save = ["lm_head"] if head else None
    if kind == "ia3":
        cfg: Any = IA3Config(target_modules=["q_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                             modules_to_save=save)
    else:
        cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                         modules_to_save=save, use_dora=kind == "dora")
    peft_model = get_peft_model(copy.deepcopy(model), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "ia3_l" in name:
                p.copy_(1.0 + 0.6 * torch.rand(p.shape, generator=g) - 0.3)
            elif "lora_magnitude_vector" in name:
                p.mul_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
            elif "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return state_from_peft_model(peft_model)


def trio(model: Any, kind: str) -> dict[str, Any]:
    return {"task": make_adapter(model, kind, 1, head=True), "ref_source": make_adapter(model, kind, 2),
            "ref_target": make_adapter(model, kind, 3)}


def snapshot(model: Any) -> dict[str, Any]:
    """Everything about a model that attaching an adapter could leave changed."""
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "modes": [(n, m.training) for n, m in model.named_modules()],
        "attrs": sorted(vars(model)),
    }


def assert_unchanged(model: Any, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    assert all(torch.equal(after["tensors"][k], v) for k, v in before["tensors"].items())
    assert {k: after[k] == before[k] for k in ("types", "grad", "modes", "attrs")} == dict.fromkeys(
        ("types", "grad", "modes", "attrs"), True)
    assert not hasattr(model, "peft_config")


def undo_evaluate(model: Any, before: dict[str, Any]) -> None:
    """Give back what evaluate()'s attach/detach leaves changed (PEFT's requires_grad=False, eval mode), so that
    the fast path's own bookkeeping is what the next comparison checks."""
    grad, modes = dict(before["grad"]), dict(before["modes"])
    for name, p in model.named_parameters():
        p.requires_grad_(grad[name])
    for name, m in model.named_modules():
        m.training = modes[name]


@pytest.mark.parametrize("kind", ["lora", "ia3", "dora"])
@pytest.mark.parametrize("task", ["world_reference", "world_nli"])
def test_prepared_scores_equal_evaluate_bit_for_bit(model: Any, tok: Any, kind: str, task: str) -> None:
    adapters = trio(model, kind)
    model.train()  # a mode the slot must give back (evaluate's attach leaves eval mode behind)
    before = snapshot(model)
    counting = CountingTokenizer(tok)
    prepared = PreparedEvaluation(model, counting, task, LANGS, limit=6)
    encoded = counting.calls
    seen = []
    for t in T_VALUES:
        merged = merge("adamergex", adapters, {"t": t}).output
        fast = prepared.score(merged)
        assert_unchanged(model, before)
        slow = evaluate(model, tok, task, LANGS, adapter=merged, limit=6, purpose="tuning", progress=False).scores
        undo_evaluate(model, before)
        assert fast == slow, (kind, task, t)
        seen.append(fast)
    assert counting.calls == encoded  # nothing was tokenised again
    assert prepared.slot.wraps == 1  # wrapped once for all trials
    # (IA)³ merges keep their shapes; LoRA's t = 0 is the task adapter itself (rank 2, its own scaling), every
    # other t the rank-6 concatenation: two layouts in the one wrapper
    assert prepared.slot.layouts == (1 if kind == "ia3" else 2)
    if task == "world_reference":  # a continuous score: the merges do change the model
        assert len({s["src"]["perplexity"] for s in seen}) == len(T_VALUES)


def test_generation_and_the_bare_model_score_as_evaluate(model: Any, tok: Any) -> None:
    adapters = trio(model, "lora")
    prepared = PreparedEvaluation(model, tok, "world_arith", ["lex"], limit=4)
    for adapter in (None, merge("adamergex", adapters, {"t": 0.5}).output):
        expected = evaluate(model, tok, "world_arith", ["lex"], adapter=adapter, limit=4, progress=False).scores
        assert prepared.score(adapter) == expected


def test_a_composition_is_attached_per_call_and_scores_as_evaluate(model: Any, tok: Any) -> None:
    adapters = trio(model, "lora")
    comp = merge("madx_stack", {"task": adapters["task"], "ref_target": adapters["ref_target"]}).output
    state = merge("adamergex", adapters, {"t": 0.5}).output
    before = snapshot(model)
    prepared = PreparedEvaluation(model, tok, "world_reference", ["lex"], limit=4)
    kwargs: dict[str, Any] = {"limit": 4, "progress": False}
    for adapter in (state, comp, state):  # slot, then the fallback, then the slot again
        assert prepared.score(adapter) == evaluate(model, tok, "world_reference", ["lex"], adapter=adapter,
                                                   **kwargs).scores
        assert not hasattr(model, "peft_config")
    assert prepared.score(comp) != prepared.score(state)
    assert prepared.slot.wraps == 1
    undo_evaluate(model, before)
    assert_unchanged(model, before)
    prepared.score(comp)
    assert_unchanged(model, before)


def test_the_tuning_objective_encodes_once_wraps_once_and_matches_evaluate(
    model: Any, tok: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adamergex.evaluation._slot as slot_module

    wraps = []
    real_wrap = slot_module.peft_model
    monkeypatch.setattr(slot_module, "peft_model", lambda *a, **k: wraps.append(1) or real_wrap(*a, **k))
    adapters = trio(model, "lora")
    before = snapshot(model)
    counting = CountingTokenizer(tok)
    objective = evaluation_objective(model, counting, "world_reference", LANGS, metric="nll_per_token", limit=4)
    trials: list[tuple[Any, float]] = []
    calls_after_first: list[int] = []

    def recording(merged: Any, trial: optuna.Trial) -> float:
        value = objective(merged, trial)
        trials.append((merged, value))
        calls_after_first.append(counting.calls)
        return value

    result = tune("adamergex", adapters, recording, n_trials=4, seed=0, direction="minimize")
    assert result.n_trials == 4 and len(trials) == 4
    assert len({calls_after_first[0], counting.calls}) == 1  # tokenised at the first trial only
    assert len(wraps) == 1
    assert_unchanged(model, before)
    for merged, value in trials:
        scores = evaluate(model, tok, "world_reference", LANGS, adapter=merged, limit=4, progress=False).scores
        assert value == sum(scores[lang]["nll_per_token"] for lang in LANGS) / len(LANGS)
    assert len({v for _, v in trials}) == 4


def test_the_objective_still_reports_each_language_and_refuses_an_unknown_metric(model: Any, tok: Any) -> None:
    adapters = trio(model, "ia3")
    merged = merge("adamergex", adapters, {"t": 0.5}).output
    objective = evaluation_objective(model, tok, "world_reference", LANGS, metric="nll_per_token", limit=4)
    study = optuna.create_study()
    trial = study.ask()
    value = objective(merged, trial)
    reported = study.trials[0].intermediate_values
    assert sorted(reported) == [0, 1] and reported[1] == value
    with pytest.raises(ConfigError, match=r"reports metrics \['nll_per_token', 'perplexity'\]; --metric 'bleu'"):
        evaluation_objective(model, tok, "world_reference", LANGS, metric="bleu", limit=4)(merged, study.ask())
    assert not hasattr(model, "peft_config")


def test_pruning_inside_a_trial_leaves_the_bare_model(model: Any, tok: Any) -> None:
    adapters = trio(model, "lora")
    before = snapshot(model)
    prepared = PreparedEvaluation(model, tok, "world_reference", LANGS, limit=4)

    def prune(lang: str, scores: dict[str, float]) -> None:
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        prepared.score(merge("adamergex", adapters, {"t": 0.5}).output, after_language=prune)
    assert_unchanged(model, before)
    seen: list[str] = []
    prepared.score(merge("adamergex", adapters, {"t": 0.5}).output, after_language=lambda lang, s: seen.append(lang))
    assert seen == LANGS


def test_past_max_layouts_the_wrapper_is_rebuilt_and_scores_stay_exact(model: Any, tok: Any) -> None:
    from adamergex.evaluation._harness import _LanguageRequests, _load_examples
    from adamergex.loading import attached

    task = get_task("world_reference")
    examples = _load_examples(task, ["lex"], "validation", {"lex": None}, 4, 0)["lex"]
    requests = _LanguageRequests(model, tok, task, examples, "decoder", lang="lex", normalization="sum",
                                 batch_size=16, max_length=None)
    adapters = trio(model, "lora")
    slot = AdapterSlot(model, max_layouts=1)
    for t in (0.0, 1.0, 0.0):
        merged = merge("adamergex", adapters, {"t": t}).output
        with slot.carrying(merged) as live:
            fast = requests.score(live)
        with attached(model, merged) as live:
            assert requests.score(live) == fast
    assert slot.wraps == 3 and slot.layouts == 1
    slot.close()
    assert slot.layouts == 0


def test_the_loader_fallback_scores_the_same(model: Any, tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PEFT's parameters cannot be located, PEFT's own loader writes each trial: same scores."""
    adapters = trio(model, "lora")
    merges = [merge("adamergex", adapters, {"t": t}).output for t in (0.3, 0.9)]
    fast = PreparedEvaluation(model, tok, "world_reference", ["lex"], limit=4)
    expected = [fast.score(m) for m in merges]
    monkeypatch.setattr(AdapterSlot, "_targets", lambda self, name, state: None)
    slow = PreparedEvaluation(model, tok, "world_reference", ["lex"], limit=4)
    assert [slow.score(m) for m in merges] == expected
    assert expected[0] != expected[1]


def test_bad_inputs_are_refused_with_what_must_hold(model: Any, tok: Any) -> None:
    adapters = trio(model, "lora")
    merged = merge("adamergex", adapters, {"t": 0.5}).output
    prepared = PreparedEvaluation(model, tok, "world_reference", ["lex"], limit=4)
    with pytest.raises(ConfigError, match=r"languages \['sov'\] were not prepared; prepared: \['lex'\]"):
        prepared.score(merged, languages=["sov"])
    with pytest.raises(IncompatibleAdaptersError, match="'other-model'.*'tiny-world'"):
        prepared.score(merged.replace(base_model="other-model"))
    assert not hasattr(model, "peft_config")
    with pytest.raises(ConfigError, match="tuning on split 'test' is refused"):
        PreparedEvaluation(model, tok, "world_reference", ["lex"], split="test")
    with pytest.raises(ConfigError, match="max_layouts must be at least 1, got 0"):
        AdapterSlot(model, max_layouts=0)
    slot = AdapterSlot(model)
    with slot.carrying(merged) as live:
        with pytest.raises(ConfigError, match="holds one adapter at a time"), slot.carrying(merged):
            pass
        with pytest.raises(ConfigError, match="close\\(\\) inside a carrying\\(\\) block"):
            slot.close()
        assert hasattr(model, "peft_config") and live is model
    from adamergex.loading import attach, detach

    wrapped = attach(model, merged)
    with pytest.raises(ConfigError, match="already carries PEFT adapters"), AdapterSlot(model).carrying(merged):
        pass
    detach(wrapped)
    with pytest.raises(RuntimeError, match="boom"), slot.carrying(merged):
        raise RuntimeError("boom")
    assert not hasattr(model, "peft_config")
