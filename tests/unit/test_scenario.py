from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.scenario import ScenarioError, bundled_scenarios, load_scenario


def test_the_bundled_scenario_reproduces_the_runbook() -> None:
    scenario = load_scenario("tekutoko")
    [deployment] = scenario.deployments
    assert (deployment.name, deployment.namespace, deployment.selector) == (
        "tekutoko-api",
        "default",
        {"app": "tekutoko-api"},
    )
    assert [r.change_cause for r in deployment.revisions] == [
        None,
        "Update to version 1.2.0",
        "Update to version 1.3.0",
    ]
    assert scenario.profile_for(deployment.revisions[-1].image).error_ratio == 0.6
    assert scenario.profile_for(deployment.revisions[1].image).error_ratio == 0.0
    assert "tekutoko" in bundled_scenarios()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nclock_speed: 0\n", "clock_speed: Input should be greater than 0"),
        ("name: x\nsurprise: 1\n", "surprise: Extra inputs are not permitted"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("name: [unclosed\n", "not valid YAML"),
        (
            "name: x\ndeployments:\n  - name: d\n    namespace: prod\n    revisions: [{image: "
            "i}]\n",
            "namespace 'prod' is not in namespaces",
        ),
        (
            "name: x\ndeployments:\n  - name: d\n    revisions: []\n",
            "deployments.0.revisions: List should have at least 1 item",
        ),
        (
            "name: x\nimages:\n  - match: '*'\n    profile: {latency: {p50_ms: 100, p95_ms: 10}}\n",
            "p95_ms must be at least p50_ms",
        ),
    ],
)
def test_a_bad_scenario_file_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_names_and_missing_files() -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        load_scenario("nope")
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario("/nowhere/at/all.yaml")
