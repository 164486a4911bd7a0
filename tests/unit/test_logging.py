from __future__ import annotations

import json
import logging

from worker.telemetry import JsonFormatter, current_service


def test_json_lines_carry_the_workflow_and_service() -> None:
    record = logging.LogRecord(
        "temporalio.activity",
        logging.INFO,
        __file__,
        1,
        "rolled back deployment/%s",
        ("tekutoko-api",),
        None,
    )
    record.temporal_activity = {
        "workflow_id": "rollback-default-tekutoko-api",
        "workflow_run_id": "r-1",
        "activity_type": "k8s.rollout_undo",
        "attempt": 1,
    }
    token = current_service.set("tekutoko-api")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        current_service.reset(token)
    assert line["message"] == "rolled back deployment/tekutoko-api"
    assert (line["workflow_id"], line["run_id"], line["service"], line["activity_type"]) == (
        "rollback-default-tekutoko-api",
        "r-1",
        "tekutoko-api",
        "k8s.rollout_undo",
    )
    assert line["level"] == "INFO"
