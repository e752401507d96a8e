"""The README's examples must run as written: the library example here, the
quick-start commands in a fresh virtual environment (its own CI step)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: Set by .ci/run's own step for the fresh-environment test (it installs
#: packages, which needs a package index, and takes a while).
FRESH_VENV = "XPNET_TEST_FRESH_VENV"


def quick_start_block() -> str:
    """The README's first ```bash block: the quick-start commands."""
    text = README.read_text(encoding="utf-8")
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1)


def test_library_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Library example\n\n```python\n(.*?)```", text, re.S)
    assert match, "README has no '## Library example' python block"
    exec(compile(match.group(1), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert float(printed.split()[0]) >= 0.9  # the validation accuracy it prints


def test_readme_starts_with_install_run_and_test_commands():
    """Issue 12.4: two commands, one that installs and runs the main job, one
    that runs the tests."""
    commands = [line.split("#")[0].strip() for line in quick_start_block().splitlines()]
    assert commands == ["pip install -e '.[dev]' && xpnet train", "pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npytest\n" in ci
    assert f"{FRESH_VENV}=1 timeout " in ci  # the fresh-environment step below


def _fresh_clone(dest: Path) -> Path:
    """The checkout's files as a clone would have them (no build outputs, no
    virtual environments), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout (an sdist): copy the tree
        ignore = shutil.ignore_patterns(
            ".git", "*venv*", "__pycache__", "*.egg-info", ".*cache", "build", "dist"
        )
        shutil.copytree(ROOT, dest, ignore=ignore)
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the work tree: skip
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="runs the bash block")
@pytest.mark.skipif(
    os.environ.get(FRESH_VENV) != "1",
    reason=f"installs xpnet into a new virtual environment (needs a package index, "
    f"~30 s): .ci/run runs it as its own step with {FRESH_VENV}=1",
)
def test_quick_start_block_runs_in_a_fresh_venv(tmp_path):
    """Issue 12.4: the README's first command block, as written, in a new
    virtual environment (not this one's packages) on a copy of the checkout,
    offline for xpnet once installed: an empty data cache and a download
    mirror where nothing listens. ``xpnet train`` must then train on the
    bundled sample, and ``pytest`` must pass (restricted here to a few fast
    modules through PYTEST_ADDOPTS; the full suite is CI's main step)."""
    clone = _fresh_clone(tmp_path / "xpnet")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", FRESH_VENV)
        and not k.startswith(("PYTEST_", "XPNET_"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        XPNET_DATA=str(tmp_path / "empty-cache"),
        XPNET_MIRRORS="http://127.0.0.1:9/",  # port 9: nothing listens
        PYTEST_ADDOPTS="-p no:cacheprovider tests/test_readme.py tests/test_idx.py",
    )
    proc = subprocess.run(
        ["bash", "-e", "-c", quick_start_block()],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert (venv / "bin" / "xpnet").is_file(), output
    assert "training on the bundled mnist-sample" in proc.stderr, output
    assert "done: 10 epochs" in proc.stdout, output
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, output


def test_readme_shows_the_real_train_help(monkeypatch):
    from xpnet.cli import build_parser

    monkeypatch.setenv("COLUMNS", "88")
    expected = build_parser().commands["train"].format_help().rstrip("\n")
    text = README.read_text(encoding="utf-8")
    match = re.search(r"this is its `--help`\):\n\n```text\n(.*?)\n```", text, re.S)
    assert match, "README has no train --help block"
    assert match.group(1) == expected
