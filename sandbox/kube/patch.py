"""The three patch types the API server accepts.

Strategic merge follows upstream for the lists modoru and kubectl touch: lists
with a merge key are merged item by item, other lists are replaced, `null`
deletes a key, and `$patch: replace|delete` directives are honoured.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

from . import errors

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Field name -> merge key, from the Kubernetes API's patchMergeKey tags.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "finalizers": "",  # a set of scalars: merged as a union
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
SERVICE_PORT_KEY = "port"


def apply_patch(content_type: str, target: dict[str, Any], body: bytes) -> dict[str, Any]:
    media = content_type.split(";")[0].strip().lower()
    try:
        patch = json.loads(body or b"null")
    except json.JSONDecodeError as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from None
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise errors.bad_request("json patch must be a list of operations")
        try:
            return jsonpatch.apply_patch(target, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise errors.ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {exc}",
            ) from None
    if not isinstance(patch, dict):
        raise errors.bad_request("merge patch must be a JSON object")
    if media == MERGE_PATCH:
        return merge_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH:
        return strategic_merge(target, patch, parent_kind=target.get("kind", ""))
    raise errors.unsupported_media_type(content_type)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, *, parent_kind: str = "", field: str = "") -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            merge_key = _merge_key(key, parent_kind)
            if merge_key is None:
                result[key] = [item for item in copy.deepcopy(value) if not _is_directive(item)]
            elif merge_key == "":
                existing = list(result.get(key) or [])
                result[key] = existing + [v for v in value if v not in existing]
            else:
                result[key] = _merge_list(result.get(key) or [], value, merge_key, parent_kind)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, parent_kind=parent_kind, field=key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


def _merge_key(field: str, parent_kind: str) -> str | None:
    if field == "ports" and parent_kind == "Service":
        return SERVICE_PORT_KEY
    return MERGE_KEYS.get(field)


def _merge_list(current: list, patch: list, merge_key: str, parent_kind: str) -> list:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not _is_directive(i)]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[index] = strategic_merge(result[index], item, parent_kind=parent_kind)
    return result
