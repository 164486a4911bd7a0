"""Reading the service catalog file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from runbook.catalog import Catalog


class CatalogError(Exception):
    pass


def load_catalog(path: Path) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise CatalogError(
            f"catalog file {path} is not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CatalogError(f"catalog file {path}: {where}: {first['msg']}") from None
