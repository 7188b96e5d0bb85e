from __future__ import annotations

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.tasks._prompts import TEMPLATES, Template, get_template


def test_lookup_finds_a_template() -> None:
    assert get_template("xnli", "true_neither_false").choices == (" True", " Neither", " False")


def test_unknown_template_lists_the_task_templates() -> None:
    with pytest.raises(UnknownNameError, match="available: cot, direct"):
        get_template("mgsm", "nope")


def test_unknown_task_lists_tasks_with_templates() -> None:
    with pytest.raises(UnknownNameError, match="tasks with templates: .*xnli"):
        get_template("nope", "x")


@pytest.mark.parametrize("task,name", [(t, n) for t, group in TEMPLATES.items() for n in group])
def test_every_template_is_documented_and_every_choice_is_a_continuation(task: str, name: str) -> None:
    template = TEMPLATES[task][name]
    assert template.description
    assert all(choice.startswith(" ") for choice in template.choices)


def test_a_missing_field_is_named() -> None:
    with pytest.raises(ConfigError, match="needs field 'hypothesis'"):
        Template(prompt="{premise} {hypothesis}").render({"premise": "p"}, where="t")


def test_braces_inside_values_are_kept_verbatim() -> None:
    prompt, _, _ = Template(prompt="{text}!").render({"text": "a {b} c"}, where="t")
    assert prompt == "a {b} c!"
