"""Google's discovery documents as the emulators' contract: the `sqladmin v1`
document that `google-api-python-client` ships is loaded from the installed
package, its methods give the routes (HTTP method and path template), and its
schemas judge JSON bodies the way Google's front end does: an unknown field, a
wrong JSON type, an int64 that is not a decimal string or a time that is not
RFC 3339 is refused with the API's wording."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import googleapiclient

DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
# Query parameters every Google API method takes (the document's top-level "parameters").
_INT = re.compile(r"^-?\d+$")


@functools.cache
def document(api: str, version: str) -> dict[str, Any]:
    return json.loads((DOCUMENTS / f"{api}.{version}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Method:
    id: str  # e.g. "sql.instances.clone"
    http_method: str
    path: str  # e.g. "v1/projects/{project}/instances/{instance}/clone"
    parameters: dict[str, Any]
    request: str | None
    response: str | None


def methods(api: str, version: str) -> dict[str, Method]:
    """Every method of the document by id."""
    found: dict[str, Method] = {}

    def walk(resources: dict[str, Any]) -> None:
        for resource in resources.values():
            for spec in (resource.get("methods") or {}).values():
                found[spec["id"]] = Method(
                    spec["id"],
                    spec["httpMethod"],
                    spec.get("flatPath") or spec["path"],
                    spec.get("parameters") or {},
                    (spec.get("request") or {}).get("$ref"),
                    (spec.get("response") or {}).get("$ref"),
                )
            walk(resource.get("resources") or {})

    walk(document(api, version).get("resources") or {})
    return found


def standard_parameters(api: str, version: str) -> set[str]:
    return set(document(api, version).get("parameters") or {})


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class SchemaViolation(ValueError):
    """A body that Google's front end would refuse: the message is the API's."""


def _type_label(spec: dict[str, Any]) -> str:
    fmt = spec.get("format")
    if fmt == "google-datetime":
        return "type.googleapis.com/google.protobuf.Timestamp"
    if fmt in ("int64", "uint64", "int32", "uint32"):
        return f"TYPE_{fmt.upper()}"
    return f"TYPE_{str(spec.get('type', 'message')).upper()}"


def check(api: str, version: str, schema: str, value: Any, at: str = "") -> None:
    """Raise SchemaViolation unless `value` fits `schema` of the document exactly."""
    schemas = document(api, version)["schemas"]
    _check(schemas, schemas[schema], value, at or _snake(schema))


def _check(schemas: dict[str, Any], spec: dict[str, Any], value: Any, at: str) -> None:
    if "$ref" in spec:
        spec = schemas[spec["$ref"]]
    kind = spec.get("type")
    if kind == "object" and "properties" in spec:
        if not isinstance(value, dict):
            raise SchemaViolation(
                f"Invalid value at '{at}' ({_type_label(spec)}), {json.dumps(value)}"
            )
        properties = spec["properties"]
        for name, item in value.items():
            if name not in properties:
                raise SchemaViolation(
                    f"Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot "
                    "find field."
                )
            _check(schemas, properties[name], item, f"{at}.{_snake(name)}")
        return
    if kind == "object":  # a map: additionalProperties gives the values' schema
        if not isinstance(value, dict):
            raise SchemaViolation(f"Invalid value at '{at}' (map), {json.dumps(value)}")
        inner = spec.get("additionalProperties") or {}
        for key, item in value.items():
            _check(schemas, inner, item, f"{at}[{key}]")
        return
    if kind == "array":
        if not isinstance(value, list):
            raise SchemaViolation(
                f"Invalid value at '{at}' ({_type_label(spec['items'])}), {json.dumps(value)}"
            )
        for index, item in enumerate(value):
            _check(schemas, spec["items"], item, f"{at}[{index}]")
        return
    fmt = spec.get("format")
    bad = SchemaViolation(f"Invalid value at '{at}' ({_type_label(spec)}), {json.dumps(value)}")
    if kind == "string":
        if not isinstance(value, str):
            raise bad
        if fmt in ("int64", "uint64") and not _INT.match(value):
            raise bad
        if fmt == "google-datetime":
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise bad from None
            if parsed.tzinfo is None:
                raise bad
        if "enum" in spec and value not in spec["enum"]:
            raise SchemaViolation(f"Invalid value at '{at}' ({_type_label(spec)}), \"{value}\"")
    elif kind == "integer":
        if isinstance(value, bool) or not (
            isinstance(value, int) or isinstance(value, str) and _INT.match(value)
        ):
            raise bad
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
    elif kind == "boolean" and not isinstance(value, bool):
        raise bad
