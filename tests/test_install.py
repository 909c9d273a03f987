"""The package as a user gets it: a wheel built from this tree, installed into a fresh venv, run
with its ``prun`` command from a folder outside the repo (a shipped config, and the README's own
example algorithm, so that the README stays true)."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from paracel.algorithms.wordcount import count_words
from paracel.launch import run_command

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "data" / "kjv-genesis-exodus.txt"
#: What a checkout holds beside the sources: never part of a build from a clean tree.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "__pycache__", ".pytest_cache",
                                    "*.egg-info", "*.so", "*.cpp")

pytestmark = pytest.mark.timeout(1200)


def run(cmd: list, cwd: Path, timeout: float = 600) -> str:
    """Run ``cmd`` without the caller's PYTHONPATH (nothing may leak in from the checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = run_command([str(c) for c in cmd], timeout=timeout, env=env, cwd=cwd)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of this tree (a build writes into its source folder)."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", work / "src"], cwd=work)
    (found,) = (work / "dist").glob("paracel-*.whl")
    return found


@pytest.fixture(scope="module")
def venv_bin(wheel, tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the wheel and its dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", venv], cwd=venv)
    run([venv / "bin" / "python", "-m", "pip", "install", wheel], cwd=venv)
    return venv / "bin"


def test_wheel_holds_every_module_under_paracel_only(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not {n for n in names if n.startswith("algorithms/")}, "a top-level 'algorithms' package"
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "paracel").rglob("*.py")}
    expected |= {f"paracel/algorithms/{p.name}" for p in (ROOT / "algorithms").glob("*.py")}
    assert {"paracel/algorithms/mf.py", "paracel/loading/api.py"} <= expected
    assert expected - names == set()
    built = {n.split("/")[-1].split(".")[0] for n in names if re.fullmatch(r"paracel/_ext/\w+\..*\.so", n)}
    assert built == {p.stem for p in (ROOT / "csrc").glob("*.pyx")}


def test_shipped_config_runs_from_outside_the_repo(venv_bin, tmp_path):
    where = run([venv_bin / "python", "-c", "import paracel.algorithms; print(paracel.algorithms.__file__)"],
                cwd=tmp_path)
    assert where.startswith(str(venv_bin.parent)), where
    run([venv_bin / "prun", "-w", "2", "-p", "1", "-c", ROOT / "configs" / "wordcount.json",
         "--set", f"params.input={TEXT}", "--timeout", "300"], cwd=tmp_path)
    got = {}
    for line in (tmp_path / "out" / "wordcount" / "wordcount.txt").read_text(encoding="utf-8").splitlines():
        word, count = line.split("\t")
        got[word] = int(count)
    assert got == dict(count_words(TEXT.read_text(encoding="utf-8").splitlines()))


def test_readme_example_algorithm_runs_from_the_users_folder(venv_bin, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    (example,) = [b for b in blocks if "class Average(paralg)" in b]
    (tmp_path / "average.py").write_text(example, encoding="utf-8")
    lengths = [i % 17 for i in range(1000)]
    (tmp_path / "my-text.txt").write_text("".join("x" * n + "\n" for n in lengths), encoding="utf-8")
    config = {"algorithm": "average:Average", "params": {"input": "my-text.txt", "min_length": 5}}
    (tmp_path / "avg.json").write_text(json.dumps(config))
    run([venv_bin / "prun", "-w", "2", "-p", "1", "-c", "avg.json", "--timeout", "300"], cwd=tmp_path)
    name, value = (tmp_path / "out" / "avg" / "average_0.txt").read_text().split()
    kept = [n for n in lengths if n >= 5]
    assert name == "mean_length" and float(value) == pytest.approx(sum(kept) / len(kept), rel=1e-12)
