from runbook.log_groups import LogLine, error_groups, normalise


def lines(pod: str, *texts: str) -> list[LogLine]:
    return [LogLine(pod=pod, text=t) for t in texts]


def test_the_same_error_from_many_pods_is_one_group_with_every_pod():
    logs = (
        lines(
            "api-1",
            '2026-11-29T02:00:01.000001Z level=error msg="query failed: column \\"plan\\" does '
            'not exist" request_id=17',
        )
        + lines(
            "api-2",
            '2026-11-29T02:00:05.000001Z level=error msg="query failed: column \\"plan\\" does '
            'not exist" request_id=99',
        )
        + lines("api-2", '2026-11-29T02:00:06.000001Z level=info msg="GET /healthz" status=200')
    )
    groups = error_groups(logs)
    assert len(groups) == 1
    assert groups[0].count == 2
    assert groups[0].pods == ["api-1", "api-2"]
    assert groups[0].first_seen == "2026-11-29T02:00:01.000001Z"
    assert groups[0].last_seen == "2026-11-29T02:00:05.000001Z"


def test_groups_are_ordered_by_count_and_ids_do_not_split_a_group():
    logs = lines(
        "p",
        'level=error msg="timeout after 3000ms talking to 10.0.0.7:5432"',
        'level=error msg="order 0f1e2d3c4b5a6978 not found"',
        'level=error msg="order aa11bb22cc33dd44 not found"',
        'level=error msg="order 123e4567-e89b-12d3-a456-426614174000 not found"',
    )
    groups = error_groups(logs)
    assert [g.count for g in groups] == [2, 1, 1]
    assert groups[0].signature == "order <hex> not found"
    assert groups[1].signature == "timeout after <n> talking to <addr>"


def test_json_and_leading_level_lines_are_read_and_other_levels_are_not():
    logs = lines(
        "p",
        '{"severity": "ERROR", "message": "payment gateway 502"}',
        '{"severity": "WARNING", "message": "slow"}',
        "ERROR: disk full on /var/lib/app",
        "everything is fine, errors=0",
        'level=warn msg="retrying"',
    )
    signatures = [g.signature for g in error_groups(logs)]
    assert signatures == ["payment gateway <n>", "disk full on /var/lib/app"]


def test_limit_keeps_the_most_frequent_and_samples_are_cut():
    logs = lines("p", *[f'level=error msg="problem kind {chr(97 + i)}"' for i in range(5)]) + lines(
        "p", 'level=error msg="problem kind a" ' + "x" * 1000
    )
    groups = error_groups(logs, limit=2)
    assert len(groups) == 2
    assert groups[0].signature == "problem kind a" and groups[0].count == 2
    assert len(groups[0].sample) <= 300


def test_normalise_leaves_words_alone():
    assert normalise("cannot connect to database") == "cannot connect to database"
