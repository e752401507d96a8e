"""The README's library example must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Library example\n\n```python\n(.*?)```", text, re.S)
    assert match, "README has no '## Library example' python block"
    exec(compile(match.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert float(printed.split()[0]) >= 0.9  # the validation accuracy it prints


def test_readme_starts_with_install_run_and_test_commands():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands[:3] == [
        "pip install -e '.[dev]'",
        "xpnet train --dataset mnist-sample",
        "pytest",
    ]
    assert (
        "\npytest\n"
        in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    )


def test_readme_shows_the_real_train_help(monkeypatch):
    from xpnet.cli import build_parser

    monkeypatch.setenv("COLUMNS", "88")
    expected = build_parser().commands["train"].format_help().rstrip("\n")
    text = README.read_text(encoding="utf-8")
    match = re.search(r"this is its `--help`\):\n\n```text\n(.*?)\n```", text, re.S)
    assert match, "README has no train --help block"
    assert match.group(1) == expected
