"""Adapter types, one module each, registered in ``ADAPTERS`` on import (see ``base.AdapterType``)."""

from . import dora, ia3, loha, lokr, lora  # noqa: F401
from .base import AdapterType

__all__ = ["AdapterType"]
