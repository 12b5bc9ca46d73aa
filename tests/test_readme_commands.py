"""Every `ordnance` command in the README parses: training commands resolve their config with --print_config,
and every option of the other commands exists on the command it is given to."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """`ordnance ...` lines of the README's shell blocks, continuation lines joined, comments dropped."""
    commands, shell, block = [], False, []
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if shell:
                text = "\n".join(block).replace("\\\n", " ")
                commands += [c.strip() for c in text.splitlines() if re.match(r"\s*(\.venv/bin/)?ordnance ", c)]
            shell, block = line.strip() in ("```bash", "```sh", "```"), []
            continue
        block.append(line)
    # a placeholder such as <synthetic best.ckpt> stands for one argument
    return [shlex.split(re.sub(r"<[^>]+>", "placeholder.ckpt", c), comments=True) for c in commands]


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    for first in (["train", "fit"], ["review", "import"], ["score"], ["export"], ["evaluate"]):
        assert any(c[1 : 1 + len(first)] == first for c in COMMANDS), first


@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[1:3] != ["train", "fit"] and c[1] != "train"],
                         ids=lambda c: " ".join(c[1:3]))  # fmt: skip
def test_readme_command_options_exist(argv):
    import click
    from ordnance.inference.cli.main import cli

    command, args = cli, argv[1:]
    while isinstance(command, click.Group):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"{args[0]} is not an ordnance command"
        command, args = sub, args[1:]
    known = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    used = {a.split("=")[0] for a in args if a.startswith("-")}
    assert used <= known | {"--help"}, f"{' '.join(argv)}: unknown options {sorted(used - known)}"


@pytest.mark.train
@pytest.mark.parametrize("argv", [c for c in COMMANDS if c[1] == "train"], ids=lambda c: " ".join(c[2:5]))
def test_readme_training_commands_resolve_their_config(argv, monkeypatch, capsys):
    from ordnance.training.cli import main

    monkeypatch.chdir(REPO)  # the recipes name their data relative to the repository root
    args = [a for a in argv[2:] if a != "--print_config"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]
    assert "model:" in capsys.readouterr().out
