"""Adapter training with Lightning: one system module, one data module and one library call.

The split follows the Lightning style guide: the *model* is a Hugging Face model wrapped in a ``PeftModel`` by
:func:`prepare_model` (only the new adapter, and the heads it saves through PEFT ``modules_to_save``, require
grad); the *system* is :class:`AdapterTrainingModule` (loss, optimiser, schedule, logging, checkpoint contents);
the data is :class:`TaskDataModule`. :func:`train_adapter` wires them to a ``lightning.Trainer``
and returns an :class:`~adamergex.AdapterState` whose metadata says how it was made; with ``output`` it is also
written as a PEFT adapter directory (``PeftModel.from_pretrained`` and :func:`adamergex.io.load_adapter` read it).

Guarantees and the pitfalls they answer (GitHub issue #3):

* **Loss without full-vocabulary float32 logits.** Causal LMs run the backbone, then a fused linear +
  cross-entropy over row chunks that computes the gradient of the hidden states chunk by chunk
  (:func:`linear_cross_entropy`): logits exist in the compute dtype one chunk at a time. Masked LMs apply the MLM
  head only at masked positions. A one-off check at fit start compares this path with the model's own logits and
  falls back to the plain forward for models whose head does something else (soft-capping, logit scales).
* **Heads.** Sequence classifiers save their classifier *and* pooler with the task adapter (``modules_to_save``),
  so a head never meets a different random pooler at the next load. Reference (language-modelling) adapters
  keep the head frozen: the base model's, or a shared head trained once by :func:`train_reference_head`;
  ``metadata["head"]`` records which, with its SHA-256, so ``ref_target − ref_source`` carries no head change.
* **Dead runs.** A loss that does not fall (classification: not below the label-entropy baseline of a
  majority-class predictor) is detected after training; the run is retried at a lower learning rate (recorded
  in ``metadata["training"]["attempts"]``), or fails with :class:`TrainingStalledError`, never saved silently.
* **Repeatability.** Seeded initialisation, data order and masking; a run resumed from its last checkpoint
  (``resume=True``) ends with the same adapter as an uninterrupted one (RNG states travel in the checkpoint, and
  the data stream restarts at the restored step). DDP gives the same adapter as one process on the same global
  batch: losses are normalised by the *global* number of target tokens.
* **MAD-X.** ``stack_on`` adapters (e.g. the source-language adapter) are active and frozen under the new task
  adapter, so ``madx_stack`` can later swap in the target-language one.
* Multi-GPU and multi-node use Lightning's own strategies (``strategy="ddp"``, ``"fsdp"``...).

Configuration: the options of a run come in validated groups (``_config``: :class:`AdapterConfig`,
:class:`DataConfig`, :class:`OptimConfig`, :class:`TrainerConfig`, :class:`RunConfig`, :class:`StallConfig`, held
by :class:`TrainingConfig`), passed down as objects. Option names are unique across groups, so
``TrainingConfig.of(lr=1e-3, max_steps=50)`` and ``train_adapter(..., lr=1e-3, max_steps=50)`` say the same, and
``adamergex train`` (:mod:`adamergex.cli.train`) offers every one of them as a flag and a YAML key. The stall
check is a Lightning callback (:class:`StallCheck`).

Layout (the modules are private to this package; import from ``adamergex.training``): ``_train``
(:func:`train_adapter`, :func:`train_reference_head`), ``_model`` (:func:`prepare_model`), ``_heads``
(:func:`head_modules`, :class:`ReferenceHead`), ``_losses`` (:func:`linear_cross_entropy`), ``_system``
(:class:`AdapterTrainingModule`, :class:`StallCheck` and the ``Trainer``), ``_config`` (the option groups), ``_data`` (:class:`TaskDataModule`, the
stream order and collation) and ``_encoding`` (token ids per objective). What a model is and how it is loaded
(:func:`adamergex.models.objective_of`, :func:`adamergex.models.load_pretrained`) is shared with evaluation and
lives in :mod:`adamergex.models`.
"""

from __future__ import annotations

from ..errors import TrainingStalledError
from ._config import (
    AdapterConfig,
    DataConfig,
    OptimConfig,
    RunConfig,
    StallConfig,
    TrainerConfig,
    TrainingConfig,
)
from ._data import Collator, EncodedDataset, StreamBatchSampler, TaskDataModule
from ._encoding import IGNORE_INDEX, data_fingerprint, encode_examples, mask_tokens
from ._heads import ReferenceHead, head_modules
from ._losses import linear_cross_entropy
from ._model import prepare_model
from ._system import AdapterTrainingModule, Schedule, StallCheck
from ._train import LIGHTNING_DIR, train_adapter, train_reference_head

__all__ = [
    "IGNORE_INDEX",
    "LIGHTNING_DIR",
    "AdapterConfig",
    "AdapterTrainingModule",
    "Collator",
    "DataConfig",
    "EncodedDataset",
    "OptimConfig",
    "ReferenceHead",
    "RunConfig",
    "Schedule",
    "StallCheck",
    "StallConfig",
    "StreamBatchSampler",
    "TaskDataModule",
    "TrainerConfig",
    "TrainingConfig",
    "TrainingStalledError",
    "data_fingerprint",
    "encode_examples",
    "head_modules",
    "linear_cross_entropy",
    "mask_tokens",
    "prepare_model",
    "train_adapter",
    "train_reference_head",
]
