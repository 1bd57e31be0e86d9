"""A small Dockerfile and .dockerignore reader for static checks (no Docker engine here)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword, its argument text, and heredoc bodies."""

    keyword: str
    args: str
    line: int
    heredocs: dict[str, str] = field(default_factory=dict)

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """Split `--flag=value` options from the remaining words (shell-split)."""
        flags, words = {}, []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    """A build stage: its FROM image expression, name, and instructions."""

    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """Parsed Dockerfile: parser directives, global ARGs (before the first FROM), stages."""

    directives: dict[str, str]
    global_args: dict[str, str]
    stages: list[Stage]

    def resolve(self, text: str) -> str:
        """Expand ${NAME} / $NAME of global ARG defaults (repeatedly, for chained defaults)."""
        for _ in range(10):
            expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                              lambda m: self.global_args.get(m.group(1) or m.group(2), m.group(0)),
                              text)
            if expanded == text:
                return text
            text = expanded
        raise ValueError(f"ARG defaults expand in a cycle: {text}")


def parse_dockerfile(text: str) -> Dockerfile:
    """Parse directives, continuation lines and heredocs (<<EOF, <<'EOF', <<-EOF)."""
    lines = text.splitlines()
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = re.fullmatch(r"#\s*(\w+)\s*=\s*(\S+)\s*", lines[index])
        if not match:
            break
        directives[match.group(1).lower()] = match.group(2)
        index += 1

    instructions: list[Instruction] = []
    while index < len(lines):
        line, start = lines[index], index + 1
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and index < len(lines):
            parts[-1] = parts[-1].rstrip()[:-1]
            following = lines[index]
            index += 1
            if following.lstrip().startswith("#"):
                parts.append("")
                continue
            parts.append(following)
        logical = " ".join(part.strip() for part in parts if part.strip())
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        for marker in re.findall(r"<<-?(['\"]?)(\w+)\1", args):
            delimiter = marker[1]
            body = []
            while index < len(lines) and lines[index].strip() != delimiter:
                body.append(lines[index])
                index += 1
            if index == len(lines):
                raise ValueError(f"line {start}: heredoc {delimiter} is never closed")
            index += 1
            instruction.heredocs[delimiter] = "\n".join(body) + "\n"
        instructions.append(instruction)

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            _, words = instruction.flags_and_words()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name, []))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may precede the first FROM")
            name, _, default = instruction.args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(directives, global_args, stages)


def healthcheck_script(dockerfile: Dockerfile) -> str:
    """The body of /usr/local/bin/autolrs-healthcheck, as the final stage's COPY heredoc writes it."""
    for copy in dockerfile.stages[-1].all("COPY"):
        _, words = copy.flags_and_words()
        if words[-1] == "/usr/local/bin/autolrs-healthcheck":
            (body,) = copy.heredocs.values()
            return body
    raise AssertionError("the final stage does not create /usr/local/bin/autolrs-healthcheck")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context.

    Docker's rules: patterns are matched against the path and each of its parent
    directories, `**` spans any number of directories, `!` re-includes, the last
    matching pattern wins.
    """
    excluded = False
    candidates = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        regex = _dockerignore_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    pieces = []
    for index, segment in enumerate(pattern.split("/")):
        if segment == "**":
            pieces.append("(?:[^/]+/)*" if index < pattern.count("/") else ".*")
            continue
        translated = fnmatch.translate(segment)
        translated = translated[len("(?s:"):-len(")\\Z")] if translated.startswith("(?s:") else translated
        translated = translated.replace(".*", "[^/]*")
        pieces.append(translated + ("/" if index < pattern.count("/") else ""))
    return re.compile("".join(pieces))
