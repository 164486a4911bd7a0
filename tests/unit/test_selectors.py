from __future__ import annotations

import pytest

from sandbox.kube.errors import ApiError
from sandbox.kube.selectors import (
    label_selector_string,
    parse_field_selector,
    parse_label_selector,
    selector_from_match_labels,
)


def obj(**labels):
    return {
        "metadata": {"name": "n1", "namespace": "default", "labels": labels},
        "involvedObject": {"kind": "Deployment", "name": "x"},
    }


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=a", {"app": "a"}, True),
        ("app==a", {"app": "b"}, False),
        ("app!=a", {"app": "b"}, True),
        ("app!=a", {}, True),
        ("app in (a, b),tier", {"app": "b", "tier": "web"}, True),
        ("app notin (a,b)", {"app": "c"}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("!canary", {"canary": "yes"}, False),
        ("app=a,tier=web", {"app": "a"}, False),
    ],
)
def test_label_selector(selector, labels, expected) -> None:
    assert parse_label_selector(selector)(obj(**labels)) is expected


def test_bad_label_selector_is_400() -> None:
    with pytest.raises(ApiError) as info:
        parse_label_selector("app=(")
    assert info.value.code == 400


def test_field_selector_on_nested_fields_in_any_order() -> None:
    assert parse_field_selector(
        "involvedObject.name=x,metadata.namespace=default,involvedObject.kind=Deployment"
    )(obj())
    assert not parse_field_selector("metadata.name!=n1")(obj())


def test_label_selector_objects_and_their_string_form() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}],
    }
    assert label_selector_string(selector) == "a=1,b=2,c in (x,y)"
    assert selector_from_match_labels(selector)(obj(a="1", b="2", c="x"))
    assert not selector_from_match_labels(selector)(obj(a="1", b="2", c="z"))
    assert not selector_from_match_labels({})(obj(a="1"))
