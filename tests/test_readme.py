"""Every command line the README shows runs, and exits as the README says.

README.md is read when the tests are collected, so the tests follow whatever it holds. A
command is a line in a fenced code block: every line of a ```bash (or ```sh, ```shell,
```console) block, and every ``$ ``-prefixed line of a plain ``` block. Of these, the lines
that start with ``implicit-bias``, ``implicit-bias-summarize``, ``python -m implicit_bias``,
``python experiments/`` or ``python benchmarks/`` are tested, each as its own case with the
command as its id:

- A trailing ``# comment`` is stripped (a ``#`` inside quotes, or inside a word, is not a
  comment, as in bash).
- Usage notation is expanded to its fullest concrete form: an optional repeated placeholder
  such as ``[more dirs …]`` is dropped, and an optional flag such as ``[--no-figures]`` is
  written out. Only a bracketed group that stands as its own word counts; Hydra list values
  such as ``dataset.a=[2,1]`` are left alone.
- The command runs through ``bash -c`` (quoting works as in a user's shell) in a fresh
  temporary directory, so ``outputs/`` lands there, with the current environment's
  ``implicit-bias`` and ``python`` (``sys.executable``'s bin directory) first on PATH.
  ``python experiments/…`` and ``python benchmarks/…`` run on a copy of that directory of the
  repository, so nothing they write reaches the working tree.
- What a command reads is provided: a sweep directory given to ``implicit-bias-summarize`` is
  made by a real two-job multirun, whose summary files are then deleted so that the command
  must rebuild them; a ``dataset.path`` file is copied from the repository if it has one, and
  otherwise the case is skipped, naming the file.
- A plain command must exit 0. A ``$ command`` line followed by an ``implicit-bias: error:``
  line (the README's "Bad input" block) must exit 2, with exactly that line as the first line
  of stderr.

Not run here:

- The two set-up commands at the top (``python3 -m venv … && pip install … && …``) and the
  ``pip install`` lines: they create environments and install packages, which CI does itself
  (``.ci/run`` runs the README's test command verbatim).
- The cluster launcher (``hydra/launcher=slurm`` or ``submitit_slurm``): it needs a SLURM
  cluster (see ``SKIPPED``). Such a line is collected and reported as skipped, with the
  reason, so it stays visible. ``hydra/launcher=submitit_local`` runs on this machine and is
  tested.

The benchmark scripts run with arguments that shorten them (``SHORTER``: fewer steps,
repeats and members, and the suite's own ``--quick``). They exercise the same code and must
exit 0; their full runs are measurements, recorded in docs/benchmarks.md, that would take
CI 20–35 minutes here.

Commands that take more than about 20 s here are marked ``slow`` (see ``SLOW``); they still
run in CI. The cases run one after another: the benchmark commands time code and must not
share the 2 CI cores with another command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Prefixes of the command lines this test runs (the first words of the command).
PREFIXES = (
    ("implicit-bias",),
    ("implicit-bias-summarize",),
    ("python", "-m", "implicit_bias"),
    ("python", "experiments/"),
    ("python", "benchmarks/"),
)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
ERROR_PREFIX = "implicit-bias: error:"

# (pattern, reason): a command matching the pattern is collected but skipped with the reason.
# The cluster launcher needs a cluster; submitit_local runs jobs on this machine and is tested.
SKIPPED = (
    (re.compile(r"hydra/launcher=(slurm|submitit_slurm)\b"),
     "the SLURM launcher needs a SLURM cluster: submitit looks for srun and submits with sbatch"),
)

# Commands that take more than about 20 s on a 2-core machine, by prefix of the command as
# run: the benchmarks take minutes (their 1000-job grid alone), and the experiment scripts
# rerun whole sweeps. Every command shown in the README today other than these takes 1-11 s.
SLOW = (
    "python benchmarks/",
    "python experiments/",
)

# Wall-clock limit for one command: generous, so that only a hang fails on time.
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Command:
    """One command line of the README and what the README says it does."""

    text: str                      # as shown, after stripping the comment and the "$ " prompt
    line: int                      # 1-based line number in README.md
    expected_exit: int = 0
    expected_stderr: str | None = None  # the exact first line of stderr, if the README shows one

    @property
    def shell(self) -> str:
        """The command as it is run: usage notation expanded to its fullest concrete form."""
        return expand_usage(self.text)


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment``, as bash reads it.

    ``#`` starts a comment only at the start of a word and outside quotes; a backslash
    escapes the next character outside single quotes.
    """
    quote = None
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


# An optional group standing as its own word: "[--no-figures]", "[more dirs …]".
_USAGE_GROUP = re.compile(r"(?:(?<=\s)|^)\[([^\[\]]*)\](?=\s|$)")


def expand_usage(command: str) -> str:
    """Usage notation written out: ``[x …]`` (optional repetition) dropped, ``[--flag]`` kept."""

    def replace(match: re.Match) -> str:
        inner = match.group(1).strip()
        if "…" in inner or "..." in inner:
            return ""
        return inner

    return re.sub(r"\s+", " ", _USAGE_GROUP.sub(replace, command)).strip()


def is_tested(command: str) -> bool:
    """Whether ``command`` starts with one of ``PREFIXES``."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    for prefix in PREFIXES:
        if len(words) < len(prefix):
            continue
        *whole, last = prefix
        if words[: len(whole)] == list(whole):
            word = words[len(whole)]
            if word == last or (last.endswith("/") and word.startswith(last)):
                return True
    return False


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


def parse_commands(markdown: str) -> list[Command]:
    """The tested command lines of ``markdown``'s fenced code blocks, in order.

    In a shell block every line is a command (``\\`` continues a line; a ``$ `` prompt is
    dropped). In a plain block only ``$ `` lines are, and the lines after one up to the next
    are its output: if the first is an ``implicit-bias: error:`` line, the command is expected
    to exit 2 with that line first on stderr.
    """
    commands: list[Command] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence[0] * len(fence)):
            end += 1
        body = lines[start:end]
        if language in SHELL_LANGUAGES:
            commands += _shell_block(body, start)
        elif language == "":
            commands += _plain_block(body, start)
        i = end + 1
    return commands


def _shell_block(body: list[str], offset: int) -> list[Command]:
    found = []
    pending, pending_line = "", 0
    for k, raw in enumerate(body):
        if not pending:
            pending_line = offset + k + 1
        text = raw.strip()
        if text.endswith("\\") and not text.endswith("\\\\"):
            pending += text[:-1].rstrip() + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text.startswith("$ "):
            text = text[2:]
        text = strip_comment(text)
        if text and is_tested(text):
            found.append(Command(text, pending_line))
    return found


def _plain_block(body: list[str], offset: int) -> list[Command]:
    found = []
    for k, raw in enumerate(body):
        if not raw.startswith("$ "):
            continue
        text = strip_comment(raw[2:].strip())
        if not text or not is_tested(text):
            continue
        output = body[k + 1] if k + 1 < len(body) and not body[k + 1].startswith("$ ") else ""
        if output.startswith(ERROR_PREFIX):
            found.append(Command(text, offset + k + 1, expected_exit=2, expected_stderr=output.rstrip()))
        else:
            found.append(Command(text, offset + k + 1))
    return found


def readme_commands() -> list[Command]:
    return parse_commands(README.read_text(encoding="utf-8"))


def _param(command: Command):
    marks = [pytest.mark.skip(reason=reason) for pattern, reason in SKIPPED if pattern.search(command.text)][:1]
    if any(command.shell.startswith(prefix) for prefix in SLOW):
        marks.append(pytest.mark.slow)
    return pytest.param(command, id=command.text, marks=marks)


COMMANDS = readme_commands()


# --- the parser, on a literal snippet -------------------------------------------------------

SNIPPET = '''\
Prose with `implicit-bias inline` is not a command.

```bash
python3 -m venv .venv && . .venv/bin/activate && pip install -e . && implicit-bias experiment=homework
implicit-bias                                   # the default
implicit-bias dataset.a=[2,1] name="a # b"      # a quoted hash stays
implicit-bias tag=x#y
python -m implicit_bias optimizer=sgd \\
    schedule.lr=0.5
python experiments/docs_figures.py
python benchmarks/suite.py --quick
python other.py
pip install -e ".[parallel]"   # joblib
implicit-bias-summarize outputs/sweeps/x [more dirs …] [--no-figures]
```

```
$ implicit-bias schedule.lr=-1
implicit-bias: error: The 'lr' parameter must be positive. Got -1 instead.
$ implicit-bias figure=false
| a table |
not a command
```

```python
implicit-bias in=python
```
'''


def test_parser_on_a_snippet():
    commands = parse_commands(SNIPPET)
    assert [c.text for c in commands] == [
        "implicit-bias",
        'implicit-bias dataset.a=[2,1] name="a # b"',
        "implicit-bias tag=x#y",
        "python -m implicit_bias optimizer=sgd schedule.lr=0.5",
        "python experiments/docs_figures.py",
        "python benchmarks/suite.py --quick",
        "implicit-bias-summarize outputs/sweeps/x [more dirs …] [--no-figures]",
        "implicit-bias schedule.lr=-1",
        "implicit-bias figure=false",
    ]
    assert [c.line for c in commands] == [5, 6, 7, 8, 10, 11, 14, 18, 20]
    error, plain = commands[-2], commands[-1]
    assert (error.expected_exit, error.expected_stderr) == (
        2, "implicit-bias: error: The 'lr' parameter must be positive. Got -1 instead.")
    assert (plain.expected_exit, plain.expected_stderr) == (0, None)
    assert all(c.expected_exit == 0 for c in commands[:-2])
    assert commands[6].shell == "implicit-bias-summarize outputs/sweeps/x --no-figures"
    assert commands[1].shell == commands[1].text  # list values are not usage notation


def test_strip_comment_follows_bash():
    assert strip_comment("a b   # c") == "a b"
    assert strip_comment("a 'b # c' # d") == "a 'b # c'"
    assert strip_comment('a "b \\" # c" # d') == 'a "b \\" # c"'
    assert strip_comment("a b#c") == "a b#c"
    assert strip_comment("a \\# b") == "a \\# b"
    # bash agrees: the same lines echo the same words
    for line in ("echo a 'b # c' # d", 'echo a "b \\" # c" # d', "echo a b#c", "echo a \\# b"):
        full = subprocess.run(["bash", "-c", line], capture_output=True, text=True).stdout
        stripped = subprocess.run(["bash", "-c", strip_comment(line)], capture_output=True, text=True).stdout
        assert full == stripped


def test_readme_has_commands():
    """A parser bug must not pass by testing nothing."""
    assert len(COMMANDS) >= 10, f"found only {len(COMMANDS)} command lines in README.md: {COMMANDS}"
    assert any(c.expected_exit == 2 for c in COMMANDS), "found no '$ command' + 'implicit-bias: error:' pair"
    assert any(c.text.startswith("implicit-bias -m") for c in COMMANDS), "found no multirun command"


# --- running the README's commands ----------------------------------------------------------

def _environment(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("HYDRA_FULL_ERROR", None)  # a user's shell does not set it; it changes the error output
    executable_dir = Path(sys.executable).parent
    if not (executable_dir / "python").exists():
        # ``python`` must be this interpreter; a script, since a symlink would lose the venv.
        bin_dir.mkdir(exist_ok=True)
        shim = bin_dir / "python"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = os.pathsep.join([str(bin_dir), str(executable_dir), env.get("PATH", "")])
    else:
        env["PATH"] = os.pathsep.join([str(executable_dir), env.get("PATH", "")])
    return env


def _prepare(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Provide what ``command`` reads (see the module docstring); skip if it cannot be."""
    words = shlex.split(command)
    if words[:1] == ["python"] and len(words) > 1 and "/" in words[1]:
        top = words[1].split("/", 1)[0]
        shutil.copytree(ROOT / top, cwd / top, ignore=shutil.ignore_patterns("__pycache__"))
    for word in words:
        if word.startswith("dataset.path="):
            path = word.split("=", 1)[1]
            if not (ROOT / path).is_file():
                pytest.skip(f"reads {path}, which neither the README nor the repository provides")
            (cwd / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, cwd / path)
    if words[:1] == ["implicit-bias-summarize"]:
        for sweep in (w for w in words[1:] if not w.startswith("-")):
            made = subprocess.run(
                ["implicit-bias", "-m", "optimizer=sgd,sign_sgd", f"hydra.sweep.dir={sweep}"],
                cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
            )
            assert made.returncode == 0, f"could not make the sweep {sweep} to summarize:\n{made.stderr}"
            for name in ("summary.csv", "summary.md"):
                (cwd / sweep / name).unlink()


def _check_made(command: str, cwd: Path) -> None:
    """What a command promises to write, beyond its exit code."""
    words = shlex.split(command)
    if words[:1] == ["implicit-bias-summarize"]:
        for sweep in (w for w in words[1:] if not w.startswith("-")):
            for name in ("summary.csv", "summary.md"):
                assert (cwd / sweep / name).is_file(), f"{command!r} did not rebuild {sweep}/{name}"


#: benchmark script → arguments appended when this test runs it (see the module docstring)
SHORTER = {
    "benchmarks/step_cost.py": "--steps 3000 --repeats 1",
    "benchmarks/batched.py": "--members 50 --steps 500 --repeats 1 --grid 10",
    "benchmarks/suite.py": "--quick",
    "benchmarks/distributed.py": "--workers 1,2,4 --steps 50 --repeats 1",
}


def _shortened(command: str) -> str:
    words = shlex.split(command)
    if words[:1] == ["python"] and len(words) > 1 and words[1] in SHORTER:
        return f"{command} {SHORTER[words[1]]}"
    return command


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command(command: Command, tmp_path: Path):
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = _environment(tmp_path / "bin")
    _prepare(command.shell, cwd, env)
    done = subprocess.run(
        ["bash", "-c", _shortened(command.shell)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )
    where = f"README.md line {command.line}: {command.shell}"
    tail = f"\n--- stdout (end) ---\n{done.stdout[-3000:]}\n--- stderr (end) ---\n{done.stderr[-3000:]}"
    assert done.returncode == command.expected_exit, (
        f"{where}\nexited {done.returncode}, the README implies {command.expected_exit}{tail}")
    if command.expected_stderr is not None:
        first = done.stderr.splitlines()[0] if done.stderr else ""
        assert first == command.expected_stderr, (
            f"{where}\nfirst line of stderr:\n  {first}\nthe README shows:\n  {command.expected_stderr}{tail}")
    else:
        _check_made(command.shell, cwd)
