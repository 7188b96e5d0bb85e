"""The evaluation harness: chance-level and oracle scores, bad input, seeded subsampling, adapters in and out.

The stub language model :class:`PrefixLM` prefers, token by token, whatever sequences it is told to favour; a
model favouring ``prompt + choices[k]`` for every example is a constant predictor, one favouring
``prompt + choices[label]`` an oracle. On balanced data a constant predictor must score exactly chance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch

from adamergex.errors import ConfigError, IncompatibleAdaptersError, UnknownNameError
from adamergex.evaluation import EvaluationResult, evaluate
from adamergex.registry import TASKS
from adamergex.task import Example, Task, TaskKind, get_task
from adamergex.tiny import tiny_llama, train_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tasks"


# -- shared helpers (also imported by the other test_evaluation_* modules) ---------------------------------------
def _fixture_texts() -> list[str]:
    texts = []
    for path in sorted(FIXTURES.glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.extend(str(v) for v in row.values() if isinstance(v, str))
    return texts


CORPUS = [
    "Question: True, False or Neither? Answer: True Neither False Yes No Label: positive negative",
    "the cat sat on the mat because it was tired therefore it slept",
    "What is 3 plus 4? The answer is 7. Step-by-step answer: 12 24 36 999",
    *_fixture_texts(),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One intra-op thread: these models are tiny, and on a busy 2-core machine two threads wait on each other
    (a tiny forward took 0.5 s with two threads and 0.01 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tok() -> Any:
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def llama(tok: Any) -> Any:
    return tiny_llama(len(tok), seed=0, name_or_path="tiny-llama")


class PrefixLM(torch.nn.Module):
    """A causal LM stub that follows favoured token sequences.

    At each position, the tokens that continue a favoured sequence whose beginning equals the (unpadded) row so
    far get logit ``+20``, EOS gets ``+20`` where a favoured sequence ends, and everything else ``0``. With
    ``eos_always`` EOS wins everywhere (a model that generates nothing).
    """

    def __init__(self, vocab_size: int, favoured: Sequence[Sequence[int]] = (), *, eos_id: int = 2,
                 eos_always: bool = False, name: str = "stub-lm") -> None:
        super().__init__()
        self.vocab_size, self.eos_id, self.eos_always = vocab_size, eos_id, eos_always
        self.next: dict[tuple[int, ...], set[int]] = {}
        for seq in favoured:
            for t in range(1, len(seq) + 1):
                self.next.setdefault(tuple(seq[:t]), set()).add(seq[t] if t < len(seq) else eos_id)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the harness a device and a dtype
        self.config = SimpleNamespace(max_position_embeddings=512, _name_or_path=name)
        self.calls: list[dict[str, Any]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, logits_to_keep: int = 0,
                use_cache: bool | None = None) -> Any:
        self.calls.append({"shape": tuple(input_ids.shape), "logits_to_keep": logits_to_keep})
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab_size)
        for i in range(b):
            start = int((mask[i] == 0).sum())  # left padding
            row = input_ids[i, start:].tolist()
            for p in range(len(row)):
                if self.eos_always:
                    logits[i, start + p, self.eos_id] = 20.0
                for tok_id in self.next.get(tuple(row[: p + 1]), ()):
                    logits[i, start + p, tok_id] = 20.0
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config: Any) -> torch.Tensor:
        seq, mask = input_ids, attention_mask
        done = torch.zeros(seq.shape[0], dtype=torch.bool)
        for _ in range(generation_config.max_new_tokens):
            nxt = self.forward(seq, mask).logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, generation_config.pad_token_id), nxt)
            done |= nxt == self.eos_id
            seq = torch.cat([seq, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], 1)
            if bool(done.all()):
                break
        return seq


def token_ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def favouring(tok: Any, examples: Sequence[Example], pick: Callable[[Example], str], **kwargs: Any) -> PrefixLM:
    """A :class:`PrefixLM` favouring ``prompt + pick(example)``; checks the token boundary is clean, so the
    harness scores exactly these token sequences."""
    seqs = []
    for ex in examples:
        whole, ctx = token_ids(tok, ex.prompt + pick(ex)), token_ids(tok, ex.prompt)
        assert whole[: len(ctx)] == ctx, f"unclean boundary for {ex.prompt[-20:]!r} + {pick(ex)!r}"
        seqs.append(whole)
    return PrefixLM(len(tok), seqs, eos_id=tok.eos_token_id, **kwargs)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def formatted(task: Task, data_files: dict[str, Any], lang: str, split: str) -> list[Example]:
    return [task.format(r) for r in task.load(lang, split, data_files=data_files[lang])]


@dataclass(frozen=True)
class ToyChoiceTask(Task):
    """A throwaway three-way classification task read from local files (``prompt``, ``label``)."""

    name: ClassVar[str] = "toy_choice"
    kind: ClassVar[TaskKind] = "classification"
    required_columns: ClassVar[tuple[str, ...]] = ("prompt", "label")
    languages: tuple[str, ...] = ("en", "fr", "de")
    num_labels: int = 3

    def format(self, example: Any) -> Example:
        choices = (" True", " Neither", " False")
        label = example["label"]
        return Example(prompt=example["prompt"], choices=choices, label=label,
                       target=choices[label] if label is not None else "", text=example["prompt"])

    def metric(self) -> Any:
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(num_classes=3, average="micro")


def toy_rows(n_per_label: int = 4) -> list[dict[str, Any]]:
    """Balanced rows whose prompts name every option, as the XNLI prompt does."""
    return [
        {"prompt": f"Item {i} {label}: is it True, False or Neither?\nAnswer:", "label": label}
        for i in range(n_per_label) for label in range(3)
    ]


@pytest.fixture
def toy(tmp_path: Path) -> Any:
    files = {lang: {"validation": write_jsonl(tmp_path / f"{lang}.jsonl", toy_rows()),
                    "test": write_jsonl(tmp_path / f"{lang}_test.jsonl", toy_rows(2))} for lang in ("en", "fr")}
    with TASKS.scoped("toy_choice", ToyChoiceTask):
        yield SimpleNamespace(task=get_task("toy_choice"), files=files)


# -- balanced data in each real task's schema ----------------------------------------------------------------
def balanced_rows(name: str) -> list[dict[str, Any]]:
    if name == "xnli":
        hyps = ["The shop opens in the morning.", "The shop sells bread.", "The shop never opens."]
        return [{"premise": f"Shop {i} opens at six. True, False or Neither.", "hypothesis": hyps[lab], "label": lab}
                for i in range(4) for lab in range(3)]
    if name == "pawsx":
        return [{"sentence1": f"The river {i} flows to the sea.", "sentence2": f"To the sea flows river {i + lab}.",
                 "label": lab} for i in range(4) for lab in range(2)]
    if name == "xcopa":
        return [{"premise": f"The ice {2 * i + lab} melted.", "choice1": "The weather turned warm.",
                 "choice2": "The pond was deep.", "question": "cause" if i % 2 else "effect", "label": lab}
                for i in range(4) for lab in range(2)]
    if name == "text_classification":
        return [{"text": f"Dish {i} was {'good' if lab else 'cold'}.", "label": lab}
                for i in range(4) for lab in range(2)]
    raise AssertionError(name)


CHOICE_TASKS = ["xnli", "pawsx", "xcopa", "text_classification"]


def real_task(name: str) -> Task:
    if name not in TASKS:
        pytest.skip(f"task {name!r} is not registered in this tree")
    if name == "text_classification":
        return get_task(name, languages=("en", "fr"), labels=("negative", "positive"))
    if name == "reference_text":
        return get_task(name, languages=("en", "sw"))
    return get_task(name)


# -- chance level and oracle ------------------------------------------------------------------------------------
def test_constant_predictor_scores_chance_even_when_the_prompt_names_every_option(tok: Any, toy: Any) -> None:
    examples = formatted(toy.task, toy.files, "en", "validation")
    for ex in examples:  # the published XNLI scripts parsed text like this and counted any answer correct
        assert all(c.strip() in ex.prompt for c in ex.choices)
    for k in range(3):
        model = favouring(tok, examples, lambda ex, k=k: ex.choices[k])
        result = evaluate(model, tok, toy.task, ["en"], data_files=toy.files, progress=False)
        assert result.scores["en"]["accuracy"] == pytest.approx(1 / 3)


def test_oracle_scores_one(tok: Any, toy: Any) -> None:
    examples = formatted(toy.task, toy.files, "en", "validation")
    model = favouring(tok, examples, lambda ex: ex.choices[ex.label])
    result = evaluate(model, tok, toy.task, "en", data_files=toy.files, progress=False, keep_predictions=True)
    assert result.scores["en"]["accuracy"] == 1.0 and set(result.scores["en"]) == {"accuracy", "gold_logprob"}
    assert -1e-6 < result.scores["en"]["gold_logprob"] <= 0.0  # the oracle puts (almost) all mass on the gold
    assert result.stderr["en"]["accuracy"] == 0.0
    assert all(p["prediction"] == p["label"] for p in result.predictions["en"])


@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_real_choice_tasks_constant_predictor_at_chance_and_oracle_at_one(name: str, tok: Any, tmp_path: Path) -> None:
    task = real_task(name)
    lang = "fr" if name != "xcopa" else "tr"
    files = {lang: {"test": write_jsonl(tmp_path / "test.jsonl", balanced_rows(name))}}
    examples = formatted(task, files, lang, "test")
    n_choices = len(examples[0].choices)
    for k in range(n_choices):
        model = favouring(tok, examples, lambda ex, k=k: ex.choices[k])
        result = evaluate(model, tok, task, [lang], split="test", data_files=files, progress=False)
        assert result.scores[lang]["accuracy"] == pytest.approx(1 / n_choices)
        assert result.scores[lang]["gold_logprob"] < -1.0  # wrong on most examples, and sure of it
    oracle = favouring(tok, examples, lambda ex: ex.choices[ex.label])
    result = evaluate(oracle, tok, task, [lang], split="test", data_files=files, progress=False)
    assert result.scores[lang]["accuracy"] == pytest.approx(1.0)
    assert result.scores[lang]["gold_logprob"] > -1e-3


@pytest.mark.parametrize("name", CHOICE_TASKS)
def test_real_choice_task_fixtures_constant_predictor_scores_label_frequency(name: str, tok: Any) -> None:
    task = real_task(name)
    found = False
    for path in sorted((FIXTURES / name).glob("*.jsonl")):
        lang, _, split = path.stem.partition("_")
        if split not in ("validation", "test") or lang not in task.languages:
            continue
        found = True
        files = {lang: {split: str(path)}}
        examples = formatted(task, files, lang, split)
        labels = [ex.label for ex in examples]
        for k in range(len(examples[0].choices)):
            model = favouring(tok, examples, lambda ex, k=k: ex.choices[k])
            result = evaluate(model, tok, task, [lang], split=split, data_files=files, progress=False)
            assert result.scores[lang]["accuracy"] == pytest.approx(labels.count(k) / len(labels))
    assert found, f"no validation/test fixture for {name}"


def test_generation_reads_only_the_continuation(tok: Any, tmp_path: Path) -> None:
    task = real_task("mgsm")
    rows = [{"question": f"Tom has {n} apples. The answer is {n}. How many apples?", "answer": None,
             "answer_number": n, "equation_solution": None} for n in (7, 12, 36)]
    files = {"fr": {"test": write_jsonl(tmp_path / "fr_test.jsonl", rows)}}
    examples = formatted(task, files, "fr", "test")
    assert all(ex.references[0] in ex.prompt for ex in examples)  # the prompt holds the answer
    silent = PrefixLM(len(tok), eos_id=tok.eos_token_id, eos_always=True)
    result = evaluate(silent, tok, task, ["fr"], split="test", data_files=files, progress=False,
                      keep_predictions=True)
    assert result.scores["fr"] == {"numeric_exact_match": 0.0}
    assert all(p["continuation"] == "" and p["answer"] == "" for p in result.predictions["fr"])
    wrong = favouring(tok, examples, lambda ex: " The answer is 999.")
    assert evaluate(wrong, tok, task, ["fr"], split="test", data_files=files, progress=False).scores["fr"] == {
        "numeric_exact_match": 0.0}
    oracle = favouring(tok, examples, lambda ex: ex.target)
    assert evaluate(oracle, tok, task, ["fr"], split="test", data_files=files, progress=False).scores["fr"] == {
        "numeric_exact_match": 1.0}


@pytest.mark.parametrize("name", ["xquad", "xlsum"])
def test_silent_model_scores_zero_on_generation_fixtures(name: str, tok: Any) -> None:
    task = real_task(name)
    path = next(p for p in sorted((FIXTURES / name).glob("*_test.jsonl")))
    lang = path.stem.split("_")[0]
    silent = PrefixLM(len(tok), eos_id=tok.eos_token_id, eos_always=True)
    files = {lang: {"test": str(path)}}
    result = evaluate(silent, tok, task, [lang], split="test", data_files=files, progress=False)
    assert result.scores[lang] and all(v == 0.0 for v in result.scores[lang].values())
    examples = formatted(task, files, lang, "test")
    oracle = favouring(tok, examples, lambda ex: " " + ex.references[0])
    result = evaluate(oracle, tok, task, [lang], split="test", data_files=files, progress=False)
    main = "exact_match" if name == "xquad" else "rougeL_fmeasure"
    assert result.scores[lang][main] == pytest.approx(1.0)


# -- bad input --------------------------------------------------------------------------------------------------
def test_unknown_task_language_and_split_list_what_exists(tok: Any, toy: Any) -> None:
    model = PrefixLM(len(tok))
    with pytest.raises(UnknownNameError, match=r"unknown task 'nope'; available: .*toy_choice"):
        evaluate(model, tok, "nope", ["en"], progress=False)
    with pytest.raises(UnknownNameError, match=r"no language 'xx'; available: en, fr, de"):
        evaluate(model, tok, toy.task, ["en", "xx"], data_files=toy.files, progress=False)
    with pytest.raises(UnknownNameError, match=r"unknown split 'dev'; available: train, validation, test"):
        evaluate(model, tok, toy.task, ["en"], split="dev", data_files=toy.files, progress=False)
    with pytest.raises(ConfigError, match=r"missing \['de'\], given for \['en', 'fr'\]"):
        evaluate(model, tok, toy.task, ["de"], data_files=toy.files, progress=False)
    with pytest.raises(ConfigError, match="normalization must be one of"):
        evaluate(model, tok, toy.task, ["en"], data_files=toy.files, normalization="mean",  # type: ignore[arg-type]
                 progress=False)


def test_test_split_for_tuning_is_refused_unless_allowed(tok: Any, toy: Any) -> None:
    model = PrefixLM(len(tok))
    with pytest.raises(ConfigError, match="tuning on split .test. is refused.*allow_test=True"):
        evaluate(model, tok, toy.task, ["en"], split="test", purpose="tuning", data_files=toy.files, progress=False)
    result = evaluate(model, tok, toy.task, ["en"], split="test", purpose="tuning", allow_test=True,
                      data_files=toy.files, progress=False)
    assert result.record["split"] == "test" and result.record["purpose"] == "tuning"
    report = evaluate(model, tok, toy.task, ["en"], split="test", data_files=toy.files, progress=False)
    assert report.record["purpose"] == "report"


def test_a_bad_data_file_fails_before_anything_is_scored(tok: Any, toy: Any, tmp_path: Path) -> None:
    model = PrefixLM(len(tok))
    files = {"en": toy.files["en"], "fr": str(tmp_path / "missing.jsonl")}
    with pytest.raises(ConfigError, match="missing.jsonl' does not exist"):
        evaluate(model, tok, toy.task, ["en", "fr"], data_files=files, progress=False)
    assert model.calls == []


def test_hidden_labels_are_refused(tok: Any, tmp_path: Path) -> None:
    rows = [{"prompt": "a True, False or Neither?", "label": 0}, {"prompt": "b", "label": None}]
    files = {"en": write_jsonl(tmp_path / "en.jsonl", rows)}
    with TASKS.scoped("toy_choice", ToyChoiceTask), pytest.raises(ConfigError, match="1 example.*without a gold"):
        evaluate(PrefixLM(len(tok)), tok, "toy_choice", ["en"], data_files=files, progress=False)


# -- seeded subsampling and the record --------------------------------------------------------------------------
def test_limit_is_seeded_repeatable_and_recorded(tok: Any, toy: Any) -> None:
    model = PrefixLM(len(tok))
    kwargs: dict[str, Any] = {"data_files": toy.files, "progress": False, "limit": 5}
    a = evaluate(model, tok, toy.task, ["en", "fr"], seed=3, **kwargs)
    b = evaluate(model, tok, toy.task, ["en", "fr"], seed=3, **kwargs)
    c = evaluate(model, tok, toy.task, ["en", "fr"], seed=4, **kwargs)
    assert a.record["examples"] == {"en": 5, "fr": 5}
    assert (a.record["limit"], a.record["seed"], c.record["seed"]) == (5, 3, 4)
    assert a.record["examples_sha256"] == b.record["examples_sha256"]
    assert a.record["examples_sha256"]["en"] != c.record["examples_sha256"]["en"]
    full = evaluate(model, tok, toy.task, ["en"], data_files=toy.files, progress=False)
    assert full.record["examples"] == {"en": 12} and full.record["limit"] is None


def test_record_is_json_and_says_how_choices_were_scored(tok: Any, toy: Any) -> None:
    result = evaluate(PrefixLM(len(tok)), tok, toy.task, ["en", "fr"], data_files=toy.files, progress=False,
                      normalization="byte_mean")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["record"]["scoring"]["method"] == "loglikelihood"
    assert data["record"]["scoring"]["normalization"] == "byte_mean"
    assert data["record"]["task"] == "toy_choice" and data["record"]["base_model"] == "stub-lm"
    assert data["average"]["accuracy"] == pytest.approx((result.scores["en"]["accuracy"]
                                                         + result.scores["fr"]["accuracy"]) / 2)
    assert "average" in result.table() and "accuracy" in result.table()


def test_logits_are_requested_for_the_continuation_positions_only(tok: Any, toy: Any) -> None:
    model = PrefixLM(len(tok))
    evaluate(model, tok, toy.task, ["en"], data_files=toy.files, progress=False, batch_size=4)
    assert model.calls and all(0 < c["logits_to_keep"] < c["shape"][1] for c in model.calls)
    assert all(c["shape"][0] <= 4 for c in model.calls)


# -- adapters ---------------------------------------------------------------------------------------------------
def lora_state(model: Any, *, seed: int, head: str | None = None, task_type: str = "CAUSAL_LM",
               targets: Sequence[str] = ("q_proj", "v_proj"), base: str | None = None) -> Any:
    """A LoRA state with random factors trained-looking on a copy of ``model`` (``head`` saved whole)."""
    import copy

    from peft import LoraConfig, get_peft_model

    from adamergex.io import state_from_peft_model

    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=list(targets), init_lora_weights=False, task_type=task_type,
                     modules_to_save=[head] if head else None)
    peft_model = get_peft_model(copy.deepcopy(model), cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    state = state_from_peft_model(peft_model, metadata={"language": "en", "task": "toy_choice"})
    return state.replace(base_model=base) if base is not None else state


def _snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_adapter_is_attached_for_the_evaluation_only(tok: Any, llama: Any, toy: Any) -> None:
    from adamergex.evaluation import choice_scores
    from adamergex.loading import attached

    state = lora_state(llama, seed=1, head="lm_head")
    before = _snapshot(llama)
    kwargs: dict[str, Any] = {"data_files": toy.files, "progress": False, "keep_predictions": True}
    adapted = evaluate(llama, tok, toy.task, ["en"], adapter=state, **kwargs)
    after = _snapshot(llama)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(llama, "peft_config") and type(llama.lm_head) is torch.nn.Linear
    assert adapted.record["adapter"]["sha256"] == state.fingerprint()
    assert adapted.record["adapter"]["base_model"] == "tiny-llama" and adapted.record["base_model"] == "tiny-llama"

    examples = formatted(toy.task, toy.files, "en", "validation")
    with attached(llama, state) as live:
        scores = choice_scores(live, tok, examples)
    best = [max(range(3), key=lambda j, s=s: (s[j], -j)) for s in scores]
    assert best == [p["prediction"] for p in adapted.predictions["en"]]  # evaluate used the adapter...
    assert scores != choice_scores(llama, tok, examples)  # ...which changes the model, and is gone again
    with pytest.raises(RuntimeError, match="boom"), attached(llama, state):
        raise RuntimeError("boom")
    assert all(torch.equal(v, llama.state_dict()[k]) for k, v in before.items())


def test_adapter_of_another_base_model_is_refused_with_both_names(tok: Any, llama: Any, toy: Any) -> None:
    state = lora_state(llama, seed=1, base="meta-llama/Llama-2-7b-hf")
    with pytest.raises(IncompatibleAdaptersError, match="'meta-llama/Llama-2-7b-hf'.*'tiny-llama'"):
        evaluate(llama, tok, toy.task, ["en"], adapter=state, data_files=toy.files, progress=False)
    assert not hasattr(llama, "peft_config")
    result = evaluate(llama, tok, toy.task, ["en"], adapter=state, data_files=toy.files, progress=False,
                      check_base_model=False)
    assert result.record["adapter"]["base_model"] == "meta-llama/Llama-2-7b-hf"


def test_adapter_directories_and_compositions(tok: Any, llama: Any, toy: Any, tmp_path: Path) -> None:
    from adamergex.io import save_adapter
    from adamergex.merging import save_merge_output
    from adamergex.strategy import Composition

    state = lora_state(llama, seed=1)
    save_adapter(state, tmp_path / "lora")
    kwargs: dict[str, Any] = {"data_files": toy.files, "progress": False, "keep_predictions": True}
    from_state = evaluate(llama, tok, toy.task, ["en"], adapter=state, **kwargs)
    from_dir = evaluate(llama, tok, toy.task, ["en"], adapter=tmp_path / "lora", **kwargs)
    assert from_dir.predictions == from_state.predictions and from_dir.scores == from_state.scores
    assert from_dir.record["adapter_path"] == str(tmp_path / "lora")

    comp = Composition("madx_stack", {"lang": lora_state(llama, seed=2), "task": state}, head_from="task")
    save_merge_output(comp, tmp_path / "stack")
    before = _snapshot(llama)
    result = evaluate(llama, tok, toy.task, ["en"], adapter=tmp_path / "stack", **kwargs)
    assert result.record["adapter"]["composition"] == "madx_stack"
    assert set(result.record["adapter"]["adapters"]) == {"lang", "task"}
    assert all(torch.equal(v, llama.state_dict()[k]) for k, v in before.items())


def test_unknown_adapter_type_lists_the_supported_ones(tok: Any, llama: Any, toy: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "prefix"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    save_file({"x": torch.zeros(1)}, str(bad / "adapter_model.safetensors"))
    with pytest.raises(UnknownNameError, match=r"unsupported PEFT adapter type 'PREFIX_TUNING'; supported: .*LORA"):
        evaluate(llama, tok, toy.task, ["en"], adapter=bad, data_files=toy.files, progress=False)


# -- encoders ---------------------------------------------------------------------------------------------------
def constant_classifier(tok: Any, k: int) -> Any:
    from adamergex.tiny import tiny_bert_classifier

    model = tiny_bert_classifier(len(tok), 3, name_or_path="tiny-bert")
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(k), 3).float() * 5)
    return model


def test_encoder_classifier_at_chance_and_with_a_head_from_the_adapter(tok: Any, toy: Any) -> None:
    for k in range(3):
        model = constant_classifier(tok, k)
        result = evaluate(model, tok, toy.task, ["en"], data_files=toy.files, progress=False)
        assert result.scores["en"]["accuracy"] == pytest.approx(1 / 3)
        assert result.record["scoring"]["method"] == "classifier_logits"
    model = constant_classifier(tok, 0)
    state = lora_state(model, seed=3, head="classifier", task_type="SEQ_CLS", targets=("query", "value"))
    head = [k for k in state.saved_modules if k.endswith("classifier.bias")][0]
    weight = [k for k in state.saved_modules if k.endswith("classifier.weight")][0]
    state.saved_modules[weight] = torch.zeros_like(state.saved_modules[weight])
    state.saved_modules[head] = torch.tensor([0.0, 0.0, 5.0])  # the adapter's head always says class 2
    kwargs: dict[str, Any] = {"data_files": toy.files, "progress": False, "keep_predictions": True}
    adapted = evaluate(model, tok, toy.task, ["en"], adapter=state, **kwargs)
    assert {p["prediction"] for p in adapted.predictions["en"]} == {2}
    bare = evaluate(model, tok, toy.task, ["en"], **kwargs)  # the base head is back
    assert {p["prediction"] for p in bare.predictions["en"]} == {0}


def test_encoder_refuses_tasks_it_cannot_score(tok: Any) -> None:
    model = constant_classifier(tok, 0)
    with pytest.raises(ConfigError, match="generation task, which a sequence classifier"):
        evaluate(model, tok, real_task("mgsm"), ["fr"], split="test", progress=False)


def test_language_modeling_perplexity(tok: Any, llama: Any) -> None:
    task = real_task("reference_text")
    files = {"en": str(FIXTURES / "reference_text" / "en.txt")}
    result = evaluate(llama, tok, task, ["en"], split="train", data_files=files, progress=False)
    scores = result.scores["en"]
    assert scores["perplexity"] == pytest.approx(torch.tensor(scores["nll_per_token"]).exp().item())
    assert 1.0 < scores["perplexity"] < 10 * len(tok)


def test_result_type(tok: Any, toy: Any) -> None:
    result = evaluate(PrefixLM(len(tok)), tok, toy.task, ["en"], data_files=toy.files, progress=False)
    assert isinstance(result, EvaluationResult) and result.predictions == {}
