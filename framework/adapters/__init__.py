"""Adapter types, one module each, registered in ``ADAPTERS`` on import (see ``base.AdapterType``)."""

from . import ia3, lora  # noqa: F401
from .base import AdapterType

__all__ = ["AdapterType"]
