from __future__ import annotations

from pathlib import Path

import pytest

from adamergex.errors import ConfigError, UnknownNameError
from adamergex.task import Example, get_task


def test_defaults_and_same_data_as_the_clm_reference() -> None:
    task = get_task("reference_mlm")
    clm = get_task("reference_clm")
    assert task.kind == "language_modeling" and task.mlm_probability == 0.15
    assert (task.dataset_id, task.revision, task.languages) == (clm.dataset_id, clm.revision, clm.languages)
    assert task.hub_source("de", "validation") == clm.hub_source("de", "validation")


def test_loads_and_formats_wikipedia_fixtures(fixtures: Path) -> None:
    # same Wikipedia schema as reference_clm, so the fixtures are shared
    task = get_task("reference_mlm")
    rows = task.load("en", "train", data_files=str(fixtures / "reference_clm/en_train.jsonl"))
    assert task.format(rows[1]) == Example(
        prompt="Granite is a coarse-grained igneous rock made mostly of quartz and feldspar."
    )


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, "0.15"])
def test_mlm_probability_must_be_a_rate(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"mlm_probability must be in \(0, 1\)"):
        get_task("reference_mlm", mlm_probability=bad)


def test_bad_inputs(fixtures: Path, write_jsonl) -> None:  # type: ignore[no-untyped-def]
    task = get_task("reference_mlm")
    path = str(fixtures / "reference_clm/sw_train.jsonl")
    with pytest.raises(UnknownNameError, match="no language 'ja'"):
        task.load("ja", "train", data_files=path)
    with pytest.raises(UnknownNameError, match="unknown split 'training'"):
        task.load("sw", "training", data_files=path)
    with pytest.raises(ConfigError, match=r"lacks \['text'\]"):
        task.load("sw", "train", data_files=write_jsonl("bad.jsonl", [{"body": "x"}]))


def test_hub_arguments(fake_hub) -> None:  # type: ignore[no-untyped-def]
    task = get_task("reference_mlm", train_documents=2)
    task.load("ar", "train")
    assert fake_hub.calls == [
        {
            "path": "wikimedia/wikipedia",
            "name": "20231101.ar",
            "split": "train",
            "revision": task.revision,
            "streaming": True,
        }
    ]
