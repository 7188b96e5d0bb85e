"""``package_versions``: what trained adapters and evaluations record about the installed stack."""

from __future__ import annotations

from importlib.metadata import version

from adamergex import __version__
from adamergex.versions import package_versions


def test_versions_are_the_installed_ones_in_a_fresh_dict_each_call() -> None:
    first = package_versions("adamergex", "torch", "no-such-distribution-xyz")
    assert first == {"adamergex": __version__, "torch": version("torch"), "no-such-distribution-xyz": "not installed"}
    first["torch"] = "edited"
    assert package_versions("adamergex", "torch", "no-such-distribution-xyz")["torch"] == version("torch")
