"""The synthetic multilingual world: the embedded default that runs the whole AdaMergeX pipeline offline.

A seeded world (people, towns, jobs, possessions, events) is described in a source language and three target
languages of increasing distance from it (``lex``: new lexicon; ``sov``: new lexicon and SOV order; ``morph``:
new lexicon, SOV, suffix morphology and a Cyrillic script; see :mod:`.grammar`). Four tasks are registered in
``TASKS``, each with ``train``/``validation``/``test`` in every language:

* ``world_reference``: causal LM on encyclopedia articles (the reference task);
* ``world_nli``: three-way entailment (classification, like XNLI);
* ``world_arith``: word problems with a numeric answer (generation, like MGSM);
* ``world_qa``: short-answer questions about a context (generation, like XQuAD).

:mod:`.model` builds (and caches) the base model, a small Llama pretrained on the reference text of all languages.
The ``adamergex demo`` pipeline that uses them is a recipe: :mod:`adamergex.recipes.demo`.
"""

from __future__ import annotations

from ._base import WorldTask
from .arith import WorldArithTask
from .grammar import LANGUAGES, Language, make_languages
from .nli import WorldNliTask
from .qa import WorldQaTask
from .reference import WorldReferenceTask
from .world import World, make_world

__all__ = [
    "LANGUAGES",
    "Language",
    "World",
    "WorldArithTask",
    "WorldNliTask",
    "WorldQaTask",
    "WorldReferenceTask",
    "WorldTask",
    "make_languages",
    "make_world",
]
