"""The README and the pages in docs/ cannot drift from the code: every `modoru …` command
in their fenced code blocks parses against the real CLI (an unknown command or option, a
bad choice or a missing required option fails, naming the file and line), and every
relative link leads to a file that exists and, with a `#fragment`, to one of its headings.

Parsing is all this checks: the commands that change something are run end to end by the
integration tests (the demo, the rollback, redeploy, restore, migration, PITR, guard,
forward-fix and incident tests), not here."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import typer.main

from starter.cli import app

ROOT = Path(__file__).resolve().parents[2]
# Pages written on other branches; the README and the index link them before they land.
PENDING_PAGES = {"docs/detection.md", "docs/slack.md"}
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "&>"}
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


@dataclass(frozen=True)
class DocCommand:
    path: str
    line: int
    argv: tuple[str, ...]

    def where(self) -> str:
        return f"{self.path}:{self.line}: modoru {shlex.join(self.argv)}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def code_line_numbers(text: str) -> set[int]:
    """Every line of a fenced code block, the fences included."""
    inside, fence, out = False, "", set()
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if opening and (not inside or opening.group(1) == fence):
            inside, fence = not inside, opening.group(1)
            out.add(number)
        elif inside:
            out.add(number)
    return out


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a fenced code block, with a line that ends
    in a backslash joined to the next (numbered as the first)."""
    inside, fence, out, pending, first = False, "", [], "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if opening and (not inside or opening.group(1) == fence):
            inside, fence = not inside, opening.group(1)
            continue
        if not inside:
            continue
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    return out


def shell_segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line: split at `&&`, `;`, `|`, with redirections and
    comments left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    tokens = iter(lexer)
    for token in tokens:
        if token in SHELL_SEPARATORS:
            segments.append([])
        elif token in REDIRECTIONS:
            next(tokens, None)
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


def modoru_argv(segment: list[str]) -> tuple[str, ...] | None:
    while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
        segment = segment[1:]  # VAR=value before the command
    if segment and (segment[0] == "modoru" or segment[0].endswith("/modoru")):
        return tuple(segment[1:])
    return None


def commands_in(path: Path) -> list[DocCommand]:
    found = []
    for number, line in fenced_lines(path.read_text(encoding="utf-8")):
        try:
            segments = shell_segments(line)
        except ValueError:  # not shell (YAML, a template): no command to check
            continue
        for segment in segments:
            argv = modoru_argv(segment)
            if argv is not None:
                found.append(DocCommand(relative(path), number, argv))
    return found


def all_commands() -> list[DocCommand]:
    return [command for path in doc_files() for command in commands_in(path)]


def parse(argv: tuple[str, ...]) -> None:
    """Parse as `modoru` would, down to the leaf command, without running it: unknown
    commands and options, bad values and missing required options raise."""
    command = typer.main.get_command(app)
    context = command.make_context("modoru", list(argv), resilient_parsing=False)
    while hasattr(command, "resolve_command"):
        # A group's parse leaves the subcommand's name in _protected_args and the rest in
        # args, as click's own Group.invoke reads them.
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context, resilient_parsing=False)


def parse_error(argv: tuple[str, ...]) -> str | None:
    try:
        parse(argv)
    except typer.Exit as exit_:  # `--help`, documented on purpose
        return None if exit_.exit_code == 0 else f"exit {exit_.exit_code}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def test_every_documented_modoru_command_parses() -> None:
    commands = all_commands()
    failures = [
        f"{command.where()}\n    {error}"
        for command in commands
        if (error := parse_error(command.argv)) is not None
    ]
    assert not failures, "documented commands the CLI refuses:\n" + "\n".join(failures)


def test_the_readme_documents_its_set_up_and_the_runbooks_procedures() -> None:
    readme = {command.argv[:2] for command in commands_in(ROOT / "README.md")}
    assert ("demo",) in {argv[:1] for argv in readme}
    for procedure in [
        ("rollback", "start"),
        ("redeploy", "start"),
        ("restore", "start"),
        ("migrate-down", "start"),
        ("pitr", "start"),
        ("forward-fix", "start"),
        ("guard", "start"),
        ("troubleshoot", "restart"),
        ("troubleshoot", "delete-replicaset"),
    ]:
        assert procedure in readme, f"the README's cheat sheet lacks `modoru {' '.join(procedure)}`"


def test_the_parser_refuses_what_the_cli_refuses(tmp_path) -> None:
    """The check can fail: an unknown option, an unknown command, a bad choice and a missing
    required option are each reported with the file and line they are on."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```bash\n"
        "modoru status rollback-default-tekutoko-api --json\n"
        "modoru rollback start --deployment tekutoko-api --severity immediate \\\n"
        '    --reason "x" --no-such-option\n'
        "modoru rollbak start --deployment tekutoko-api\n"
        "TEMPORAL_ADDRESS=127.0.0.1:7233 modoru rollback start --deployment d "
        "--severity soon --reason x\n"
        "echo ok && modoru redeploy start --deployment d --reason x > out.txt  # no --tag\n"
        "```\n"
        "modoru is-not-in-a-code-block\n",
        encoding="utf-8",
    )
    found = commands_in(page)
    assert [command.line for command in found] == [3, 4, 6, 7, 8]
    assert [parse_error(command.argv) is None for command in found] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert "--no-such-option" in parse_error(found[1].argv)
    assert "rollbak" in parse_error(found[2].argv)
    assert "soon" in parse_error(found[3].argv)
    assert "tag" in parse_error(found[4].argv)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped (letters of
    any script, digits, `_` and `-` kept), spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    out = set()
    in_code = code_line_numbers(text)
    for number, line in enumerate(text.splitlines(), start=1):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None or number in in_code:
            continue
        slug = github_anchor(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links_in(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    in_code = code_line_numbers(text)
    return [
        (number, target)
        for number, line in enumerate(text.splitlines(), start=1)
        if number not in in_code
        for target in LINK.findall(INLINE_CODE.sub("", line))
    ]


def broken_link(source: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    file_part, _, fragment = target.partition("#")
    destination = (source.parent / file_part).resolve() if file_part else source
    if not destination.exists():
        try:
            name = destination.relative_to(ROOT).as_posix()
        except ValueError:
            return f"{target}: outside the repository and missing"
        return None if name in PENDING_PAGES else f"{target}: no such file"
    if fragment and destination.suffix == ".md" and fragment not in anchors(destination):
        return f"{target}: no heading #{fragment} in {relative(destination)}"
    return None


def test_every_relative_link_resolves() -> None:
    failures = [
        f"{relative(path)}:{number}: {problem}"
        for path in doc_files()
        for number, target in links_in(path)
        if (problem := broken_link(path, target)) is not None
    ]
    assert not failures, "broken links:\n" + "\n".join(failures)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path) -> None:
    assert broken_link(ROOT / "README.md", "docs/no-such-page.md") is not None
    assert broken_link(ROOT / "README.md", "docs/security.md#no-such-heading") is not None
    assert broken_link(ROOT / "docs" / "README.md", "security.md") is None
    assert broken_link(ROOT / "README.md", "https://example.com/x.md") is None
    assert github_anchor("Approvals you can trust") == "approvals-you-can-trust"
    assert github_anchor("Redeploying a known-good tag (method 2)") == (
        "redeploying-a-known-good-tag-method-2"
    )
    assert github_anchor("`modoru up` supervises its children") == (
        "modoru-up-supervises-its-children"
    )


@pytest.mark.parametrize("page", sorted(PENDING_PAGES))
def test_pending_pages_are_only_allowed_while_absent(page) -> None:
    """Once a pending page lands it is checked like any other (its links and commands are in
    doc_files()); until then a link to it is not an error."""
    path = ROOT / page
    if path.exists():
        assert path in doc_files()
    else:
        assert broken_link(ROOT / "README.md", page) is None
