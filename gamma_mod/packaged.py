"""Built-in configs that ship inside the package: model specs and training recipes, found by name.

They live in `gamma_mod/configs/{model,train}/*.yaml` (package data, so a wheel install has them; the
top-level `configs/` of a source checkout is a link to the same folder, not a second copy). Every
command takes either a name of a built-in ("tiny", "stage1_tiny") or a path to a YAML file of one's own.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Installed packages are plain folders on disk (setuptools wheels are never imported zipped), so the
# resource root is a real path that YAML loaders and globbing can use directly.
CONFIG_DIR = Path(str(files("gamma_mod") / "configs"))
CONFIG_KINDS = ("model", "train")


def builtin_config_names(kind: str) -> list[str]:
    """Names of the built-in configs of one kind ("model" specs or "train" recipes)."""
    _check_kind(kind)
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def resolve_config(kind: str, name_or_path: str | Path) -> Path:
    """A YAML path as given when it exists, else the built-in config of that name.

    Raises FileNotFoundError naming both places looked at and the built-in names.
    """
    _check_kind(kind)
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = CONFIG_DIR / kind / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and builtin.is_file():
        return builtin
    raise FileNotFoundError(
        f"{kind} config {str(name_or_path)!r}: no such file, and no built-in {kind} config of that name "
        f"(built-in: {', '.join(builtin_config_names(kind))})"
    )


def _check_kind(kind: str) -> None:
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind must be one of {CONFIG_KINDS}, got {kind!r}")
