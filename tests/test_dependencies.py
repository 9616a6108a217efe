"""Every third-party module the product imports is installed by ``make demo``.

``make demo`` installs only ``pyproject.toml``'s runtime dependencies, while the tests run in a
venv with the ``dev`` extra too; a module that only the ``dev`` extra brings (``httpx`` was one:
the demo's clip upload and traffic died on the import on a fresh clone) passes every test and
breaks the product. Every import of every product package (lazy ones too, parsed as in
``test_layering``) must come from a runtime dependency, from one of theirs (the installed
metadata's requirement tree), or from an optional extra other than ``dev`` (``nsfw``).
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_layering import LAYERS, ROOT, imported_modules


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, with their requirements', as installed."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        extras = ("", *sorted(req.extras))
        if (key := (canonicalize_name(req.name), extras)) in seen:
            continue
        seen.add(key)
        try:
            needs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [r for r in map(Requirement, needs)
                 if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras)]
    return {name for name, _ in seen}


def test_every_product_import_is_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = [r for extra, reqs in project["optional-dependencies"].items()
                if extra != "dev" for r in reqs]
    installed = _closure(project["dependencies"] + optional)
    providers = metadata.packages_distributions()
    missing = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top in LAYERS or top in sys.stdlib_module_names:
                    continue
                if not any(canonicalize_name(d) in installed for d in providers.get(top, [])):
                    missing.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not missing, "not installed by `make demo` (add to [project] dependencies):\n" + \
        "\n".join(missing)
    assert "httpx" in installed and "torch" in installed  # not vacuous
