"""Named prompt templates for decoder models, and the one lookup that finds them.

A task picks its template by name through its ``template`` field; :func:`get_template` is the only lookup. Patterns
are ``str.format`` strings over the fields of one example: its raw columns plus the fields the task derives (each
task's docstring lists them). Classification and multiple-choice templates give one continuation per class **in
the label order of the Hub dataset**, each starting with a space so that it is a short continuation of the prompt;
generation templates give the gold ``target`` used for training.

The templates stay in English for every language: the task adapter is trained on English prompts and evaluated
zero-shot on target-language inputs, as in AdaMergeX (arXiv 2402.18913).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adamergex.errors import ConfigError, UnknownNameError

__all__ = ["TEMPLATES", "Template", "get_template"]


@dataclass(frozen=True)
class Template:
    """One named prompt format."""

    prompt: str
    """Pattern of the decoder input that precedes the answer."""
    choices: tuple[str, ...] = ()
    """Patterns of the candidate continuations, in label order (classification / multiple choice)."""
    target: str = ""
    """Pattern of the gold continuation (generation); classification targets are ``choices[label]``."""
    description: str = ""
    """One line saying what the template is and where it comes from."""

    def render(self, fields: Mapping[str, Any], *, where: str) -> tuple[str, tuple[str, ...], str]:
        """``(prompt, choices, target)`` with ``fields`` filled in; ``where`` names the template in errors."""
        try:
            prompt = self.prompt.format_map(fields)
            choices = tuple(c.format_map(fields) for c in self.choices)
            target = self.target.format_map(fields)
        except KeyError as exc:
            raise ConfigError(
                f"template {where} needs field {exc.args[0]!r}; the example has {sorted(fields)}"
            ) from None
        return prompt, choices, target


# One dict per task name; the first entry is the task's default.
TEMPLATES: dict[str, dict[str, Template]] = {
    "xnli": {
        "true_neither_false": Template(
            prompt="{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:",
            # entailment=0, neutral=1, contradiction=2 (facebook/xnli label order)
            choices=(" True", " Neither", " False"),
            description="GPT-3 style NLI question; one-word answers in XNLI label order",
        ),
    },
    "xcopa": {
        "connective": Template(
            prompt="{premise_stem} {connective}",
            choices=(" {choice1_lower}", " {choice2_lower}"),
            description="COPA as sentence completion: premise without its final punctuation, then 'because' "
            "(question=cause) or 'therefore' (question=effect), then the choice with a lower-cased first letter "
            "(Brown et al. 2020; lm-evaluation-harness copa)",
        ),
    },
    "pawsx": {
        "same_meaning": Template(
            prompt="Sentence 1: {sentence1}\nSentence 2: {sentence2}\n"
            "Question: Do Sentence 1 and Sentence 2 mean the same thing? Yes or No?\nAnswer:",
            # 0 = not a paraphrase, 1 = paraphrase (paws-x label order)
            choices=(" No", " Yes"),
            description="paraphrase as a yes/no question; answers in PAWS-X label order",
        ),
    },
    "mgsm": {
        "cot": Template(
            prompt="Question: {question}\nStep-by-step answer:",
            target=" {rationale}\nThe answer is {answer_number}.",
            description="chain of thought: the GSM8K rationale (calculator annotations removed), then "
            "'The answer is N.'; the answer is the last number of the continuation",
        ),
        "direct": Template(
            prompt="Question: {question}\nAnswer:",
            target=" {answer_number}",
            description="the number alone",
        ),
    },
    "xquad": {
        "context_question": Template(
            prompt="{context}\nQuestion: {question}\nAnswer:",
            target=" {answer}",
            description="extractive QA: passage, question, then the first gold answer span",
        ),
    },
    "xlsum": {
        "article_summary": Template(
            prompt="Article: {text}\nSummary:",
            target=" {summary}",
            description="abstractive summary of a BBC article in one or two sentences",
        ),
    },
    "text_classification": {
        "label": Template(
            prompt="{text}\nLabel:",
            choices=(),  # " {label name}" for each entry of the task's `labels`
            description="single text followed by 'Label:'; choices are the task's label names",
        ),
        "label_pair": Template(
            prompt="{text}\n{text_pair}\nLabel:",
            choices=(),
            description="two texts on separate lines followed by 'Label:'; choices are the task's label names",
        ),
    },
}


def get_template(task: str, name: str) -> Template:
    """The template ``name`` of ``task``; an unknown name lists the task's templates."""
    if task not in TEMPLATES:
        raise UnknownNameError(f"no prompt templates for task {task!r}; tasks with templates: {', '.join(TEMPLATES)}")
    templates = TEMPLATES[task]
    if name not in templates:
        raise UnknownNameError(
            f"unknown template {name!r} for task {task!r}; available: {', '.join(sorted(templates))}"
        )
    return templates[name]
