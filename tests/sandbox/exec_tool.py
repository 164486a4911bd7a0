"""A stand-in container command for the pods/exec tests, and the scenario that maps it.

Run as a script it is `/bin/tool` inside the sandbox's pods:
  echo WORDS... | err WORDS... | exit N | cat | env NAMES... | sleep SECONDS PIDFILE | tty | lines N
Imported, `write_scenario` writes a small scenario whose pods map `/bin/tool` to it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import yaml

TOOLS_IMAGE = "example.test/tools:1.0"
SHORT_TIMEOUT_IMAGE = "example.test/tools:short-timeout"
NEVER_PULLS_IMAGE = "example.test/tools:missing"


def write_scenario(folder: Path) -> Path:
    tool = ["{python}", str(Path(__file__).resolve())]
    scenario = {
        "name": "exec-test",
        "clock_speed": 20.0,
        "namespaces": ["default"],
        "images": [
            {
                "match": NEVER_PULLS_IMAGE,
                "profile": {"pull": "fail", "commands": {"/bin/tool": tool}},
            },
            {
                "match": SHORT_TIMEOUT_IMAGE,
                "profile": {
                    "ready_after_seconds": 0.1,
                    "exec_timeout_seconds": 1,
                    "commands": {"/bin/tool": tool},
                },
            },
            {
                "match": "example.test/tools:*",
                "profile": {
                    "ready_after_seconds": 0.1,
                    "commands": {
                        "/bin/tool": tool,
                        "/bin/gone": ["/nonexistent/sandbox-test-binary"],
                    },
                },
            },
        ],
        "deployments": [
            {
                "name": "tools",
                "replicas": 1,
                "container": "main",
                "env": {"GREETING": "hello"},
                "revisions": [{"image": TOOLS_IMAGE}],
            }
        ],
        "secrets": [{"name": "db", "data": {"PASSWORD": "s3cret-value", "USER": "app"}}],
        "configmaps": [{"name": "settings", "data": {"LOG_LEVEL": "debug"}}],
    }
    path = folder / "exec-test.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def main(args: list[str]) -> int:
    verb, rest = args[0], args[1:]
    if verb == "echo":
        print(" ".join(rest))
    elif verb == "err":
        print(" ".join(rest), file=sys.stderr)
    elif verb == "exit":
        print(f"exiting with {rest[0]}")
        return int(rest[0])
    elif verb == "cat":
        for line in sys.stdin:
            sys.stdout.write(line.upper())
            sys.stdout.flush()
        print("stdin closed")
    elif verb == "env":
        for name in rest:
            print(f"{name}={os.environ.get(name, '<unset>')}")
    elif verb == "sleep":
        Path(rest[1]).write_text(str(os.getpid()))
        print("sleeping", flush=True)
        time.sleep(float(rest[0]))
    elif verb == "lines":  # numbered lines on stdout and every tenth on stderr, to test framing
        for i in range(int(rest[0])):
            print(f"line {i:07d} " + "x" * 64)
            if i % 10 == 0:
                print(f"err {i}", file=sys.stderr)
    elif verb == "tty":
        print(f"stdin={sys.stdin.isatty()} stdout={sys.stdout.isatty()}")
    else:
        print(f"tool: unknown verb {verb}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
