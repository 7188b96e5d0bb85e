"""``loading.peft_model``: every PEFT wrap in adamergex goes through it, without transformers' deprecation notice."""

from __future__ import annotations

import warnings

from peft import LoraConfig, PeftModel

from adamergex.loading import peft_model
from adamergex.tiny import tiny_llama

NOTICE = r".*is_gradient_checkpointing.*"


def test_peft_model_wraps_without_the_is_gradient_checkpointing_notice() -> None:
    config = LoraConfig(r=2, target_modules=["q_proj"])
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        PeftModel(tiny_llama(64, seed=0), config, "default")
    # the reason for the wrapper: PEFT's constructor reads the deprecated attribute (drop the wrapper once it stops)
    assert any("is_gradient_checkpointing" in str(w.message) for w in raw)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=NOTICE)
        wrapped = peft_model(tiny_llama(64, seed=0), LoraConfig(r=2, target_modules=["q_proj"]), "mine")
    assert isinstance(wrapped, PeftModel) and wrapped.active_adapter == "mine"
