"""The one ``--data-files`` grammar of every command (:func:`adamergex.cli._options.parse_data_files`)."""

from __future__ import annotations

import pytest
from adamergex.cli._options import DATA_FILES_HELP, data_file_inputs, parse_data_files
from adamergex.errors import ConfigError


def test_every_form_for_several_languages() -> None:
    got = parse_data_files(["fr=a.jsonl", "de:test=b.jsonl", "de:validation=c.jsonl", "de:test=d.jsonl"],
                           languages=["de", "fr"])
    assert got == {"de": {"test": ["b.jsonl", "d.jsonl"], "validation": "c.jsonl"}, "fr": "a.jsonl"}
    assert list(got) == ["de", "fr"]  # in the command's language order
    assert parse_data_files([], languages=["fr"]) is None


def test_single_language_forms_and_trains_older_spellings() -> None:
    one = ["en"]
    assert parse_data_files(["data/all.jsonl"], languages=one) == {"en": "data/all.jsonl"}
    assert parse_data_files("all.jsonl", languages=one) == {"en": "all.jsonl"}
    assert parse_data_files([":train=t.jsonl", ":validation=v.jsonl"], languages=one) == {
        "en": {"train": "t.jsonl", "validation": "v.jsonl"}}
    # train's SPLIT=FILE (YAML configs written before the one grammar) is :SPLIT=FILE
    assert parse_data_files(["train=t.jsonl", "validation=v.jsonl"], languages=one) == {
        "en": {"train": "t.jsonl", "validation": "v.jsonl"}}
    assert parse_data_files(["en:train=a", "en:train=b"], languages=one) == {"en": {"train": ["a", "b"]}}
    # a path with '=' in a folder name is a bare path, not KEY=PATH
    assert parse_data_files(["runs/lang=en/x.jsonl"], languages=one) == {"en": "runs/lang=en/x.jsonl"}


def test_a_language_named_like_a_split_is_the_language() -> None:
    assert parse_data_files(["test=x.jsonl"], languages=["test", "en"]) == {"test": "x.jsonl"}


@pytest.mark.parametrize(("items", "languages", "message"), [
    (["xx=a"], ["en", "fr"], r"entry 'xx=a': 'xx' is neither a language of this command \(en, fr\) nor a split"),
    (["a.jsonl"], ["en", "fr"], r"entry 'a.jsonl' names no language.*reads en, fr: write LANG=PATH"),
    ([":test=a"], ["en", "fr"], r"entry ':test=a' names no language"),
    (["de:test=a"], ["en"], r"entry 'de:test=a': language 'de' is not one this command reads \(en\)"),
    (["en:dev=a"], ["en"], r"entry 'en:dev=a': split 'dev' must be one of train, validation, test"),
    (["en="], ["en"], r"entry 'en=' names no file"),
    (["en=a", "en:test=b"], ["en"], r"entry 'en:test=b': language 'en' has both one file for every split"),
    (["a", "b"], ["en"], (r"entry 'b': language 'en' already has one file for every split \('a'\); several files "
                          r"must name their split")),
])
def test_errors_name_the_entry(items: list[str], languages: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_data_files(items, languages=languages)


def test_option_name_and_inputs_and_help() -> None:
    with pytest.raises(ConfigError, match="^--head-data-files entry"):
        parse_data_files(["xx=a"], languages=["en", "fr"], option="--head-data-files")
    files = parse_data_files(["en:test=a", "en:test=b", "fr=c"], languages=["en", "fr"])
    assert data_file_inputs(files) == {"--data-files en:test": "a", "--data-files en:test #2": "b",
                                       "--data-files fr": "c"}
    assert all(form in DATA_FILES_HELP for form in ("LANG:SPLIT=PATH", "LANG=PATH", ":SPLIT=PATH", "PATH"))


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_every_command_says_it_the_same_way(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from adamergex.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data-files [LANG][:SPLIT]=PATH" in text and " ".join(DATA_FILES_HELP.split()) in text
    assert "--task-options KEY=VALUE" in text
