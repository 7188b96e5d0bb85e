"""``val_at_start``: the held-out loss before the first step, recorded next to the one at the end."""

from __future__ import annotations

from adamergex.tasks.world.model import load_base_model
from adamergex.training import train_adapter


def _ref():
    from adamergex.task import get_task

    return get_task("world_reference", train_size=20, validation_size=6, test_size=4, chunk_length=32)


def test_val_at_start_records_the_loss_before_and_after() -> None:
    base = load_base_model("tiny", progress=False)
    state = train_adapter(base.model, base.tokenizer, _ref(), "lex", adapter="lora", max_steps=4, lr=1e-2, batch_size=4,
                          adapter_options={"r": 2, "target_modules": ["q_proj"]}, val_split="validation",
                          val_at_start=True, on_stall="warn")
    training = state.metadata["training"]
    start, end = training["validation"]["initial"]["val/loss"], training["validation"]["val/loss"]
    assert isinstance(start, float) and isinstance(end, float) and start != end


def test_the_held_out_curve_is_recorded_at_every_validation() -> None:
    base = load_base_model("tiny", progress=False)
    state = train_adapter(base.model, base.tokenizer, _ref(), "lex", adapter="lora", max_steps=6, lr=1e-2, batch_size=4,
                          adapter_options={"r": 2, "target_modules": ["q_proj"]}, val_split="validation",
                          val_at_start=True, val_every=2, on_stall="warn")
    validation = state.metadata["training"]["validation"]
    curve = validation["curve"]
    assert [p["step"] for p in curve] == [0, 2, 4, 6]
    assert curve[0]["loss"] == validation["initial"]["val/loss"] and curve[-1]["loss"] == validation["val/loss"]


def test_without_a_validation_split_nothing_is_validated() -> None:
    base = load_base_model("tiny", progress=False)
    state = train_adapter(base.model, base.tokenizer, _ref(), "lex", adapter="lora", max_steps=2, batch_size=4,
                          adapter_options={"r": 2, "target_modules": ["q_proj"]}, val_at_start=True,
                          on_stall="warn")
    assert state.metadata["training"]["validation"] == {}
