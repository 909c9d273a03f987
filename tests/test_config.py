"""Config validation: every mistake names the file and the field."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paracel.config import load_config
from paracel.errors import ConfigError
from paracel.launch import build_command, prepare


def write(tmp_path, data):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data) if isinstance(data, dict) else data)
    return path


@pytest.mark.parametrize("data, message", [
    ({"algorithm": "tests.jobs:TopK", "rounds": 3}, "unknown field 'rounds'"),
    ({"params": {}}, "missing field 'algorithm'"),
    ({"algorithm": "tests.jobs:TopK", "params": {"kk": 1}}, "unknown field 'params.kk' for TopK"),
    ({"algorithm": "tests.jobs:Raises"}, "missing field 'params.mode' for Raises"),
    ({"algorithm": "tests.jobs:TopK", "staleness": -1}, "field 'staleness' must be an integer >= 0"),
    ({"algorithm": "tests.jobs:Nope"}, "field 'algorithm': cannot import 'tests.jobs:Nope'"),
    ({"algorithm": "json:dumps"}, "is not a paracel.paralg subclass"),
    ("{\n  \"algorithm\": ,\n}", "invalid JSON at line 2"),
])
def test_errors_name_file_and_field(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_overrides_and_defaults(tmp_path):
    path = write(tmp_path, {"algorithm": "tests.jobs:TopK"})
    config = load_config(path, ["params.k=7", "staleness=null", "description=hello world"])
    assert config.params == {"k": 7} and config.staleness is None and config.description == "hello world"
    assert config.output.endswith("job") and config.cache is True


def test_prepare_writes_resolved_config_and_command(tmp_path):
    path = write(tmp_path, {"algorithm": "tests.jobs:TopK", "output": str(tmp_path / "o")})
    job, resolved = prepare(path, staleness=3)
    assert json.loads(resolved.read_text())["staleness"] == 3
    cmd = build_command(resolved, workers=4, servers=2)
    assert cmd[1:3] == ["-n", "7"] and cmd[-2:] == ["--servers", "2"]
    assert build_command(resolved, 1, 1, mode="slurm")[:3] == ["srun", "-n", "3"]
    assert "-f" in build_command(resolved, 1, 1, mode="mpi", hostfile="hosts")
    with pytest.raises(ValueError, match="needs --hostfile"):
        build_command(resolved, 1, 1, mode="mpi")


# -- typed params: the constructor's annotations are the schema (tests/typed_jobs.py)

ROOT = Path(__file__).resolve().parents[1]
TYPED = "tests.typed_jobs:Typed"


def typed(tmp_path, **params):
    return load_config(write(tmp_path, {"algorithm": TYPED, "params": params}))


@pytest.mark.parametrize("params, message", [
    ({"rank": "abc"}, "field 'params.rank' must be int >= 1, got 'abc'"),
    ({"rank": 2.0}, "field 'params.rank' must be int >= 1, got 2.0"),
    ({"rank": True}, "field 'params.rank' must be int >= 1, got True"),
    ({"rank": 0}, "field 'params.rank' must be int >= 1, got 0"),
    ({"rank": None}, "field 'params.rank' must be int >= 1, got None"),
    ({"decay": 1.5}, "field 'params.decay' must be float > 0 and <= 1, got 1.5"),
    ({"reg": -1}, "field 'params.reg' must be float >= 0, got -1"),
    ({"rate": "fast"}, "field 'params.rate' must be float, got 'fast'"),
    ({"verbose": 1}, "field 'params.verbose' must be bool, got 1"),
    ({"name": 5}, "field 'params.name' must be str, got 5"),
    ({"mode": "diagonal"}, "field 'params.mode' must be one of 'sparse', 'dense', got 'diagonal'"),
    ({"train": "no/such/file.txt"}, "field 'params.train' must be str naming existing files or None, "
                                    "got 'no/such/file.txt'"),
    ({"train": "*.nothing"}, "field 'params.train' must be str naming existing files or None"),
    ({"ids": [1, "x"]}, "field 'params.ids[1]' must be int, got 'x'"),
    ({"ids": "1,2"}, "field 'params.ids' must be list[int] or None, got '1,2'"),
    ({"weights": {"a": "b"}}, "field 'params.weights.a' must be float, got 'b'"),
    ({"limit": 6}, "field 'params.limit' must be int <= 5 or None, got 6"),
    ({"choice": 1.5}, "field 'params.choice' must be int or str, got 1.5"),
    ({"pair": [1, 2]}, "field 'params.pair' must be tuple[int, int], got [1, 2]"),
])
def test_typed_param_errors_name_field_type_and_value(tmp_path, params, message):
    with pytest.raises(ConfigError) as info:
        typed(tmp_path, **params)
    assert message in str(info.value) and str(tmp_path / "job.json") in str(info.value)


def test_typed_params_accept_and_convert(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # input paths are relative to where prun runs
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.txt").write_text("1\n")
    config = typed(tmp_path, rank=3, rate=3, reg=0, decay=1, verbose=True, mode="dense",
                   train="parts/*.txt", ids=[1, 2], weights={"a": 1, "b": 0.5}, limit=None,
                   choice="s", anything={"any": [1, "thing"]})
    assert config.params == {"rank": 3, "rate": 3.0, "reg": 0.0, "decay": 1.0, "verbose": True,
                             "mode": "dense", "train": "parts/*.txt", "ids": [1, 2],
                             "weights": {"a": 1.0, "b": 0.5}, "limit": None, "choice": "s",
                             "anything": {"any": [1, "thing"]}}
    assert type(config.params["rate"]) is float and type(config.params["weights"]["a"]) is float
    for train in ("parts", "parts/a.txt", None):  # a folder, a file, none
        assert typed(tmp_path, train=train).params["train"] == train


@pytest.mark.parametrize("algorithm, params, message", [
    ("BadAnnotation", {}, "field 'algorithm': cannot read the parameter annotations of BadAnnotation: "
                          "NameError"),
    ("Misfit", {"label": "b"}, "field 'algorithm': Misfit cannot check 'params.label': '>=' not supported"),
])
def test_annotations_the_checker_cannot_use_name_the_algorithm(tmp_path, algorithm, params, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, {"algorithm": f"tests.typed_jobs:{algorithm}", "params": params}))


def test_prun_reports_a_bad_param_in_one_line_before_any_rank_starts(tmp_path):
    path = write(tmp_path, {"algorithm": TYPED, "output": str(tmp_path / "out")})
    done = subprocess.run([sys.executable, "prun.py", "-c", str(path), "--set", "params.rank=abc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"prun: error: {path}: field 'params.rank' must be int >= 1, got 'abc'\n"


def test_prun_imports_user_algorithms_from_the_current_folder(tmp_path):
    # the installed prun command, whose own path holds its script folder, not the user's
    (tmp_path / "mine.py").write_text("from paracel import paralg\n\n"
                                      "class Mine(paralg):\n    def solve(self):\n        pass\n")
    write(tmp_path, {"algorithm": "mine:Mine"})
    prun = Path(sys.executable).parent / "prun"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(prun), "-c", "job.json", "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "job" / "config.json").read_text())["algorithm"] == "mine:Mine"


def test_one_import_helper_behind_each_callers_own_error():
    from paracel.errors import ParacelError
    from paracel.importing import NotImportable, import_by_name, import_function
    from paracel.loading.errors import LoadError
    from paracel.loading.formats import resolve_parser
    from paracel.updates import resolve

    assert import_by_name("tests.jobs:TopK").__name__ == "TopK"
    for name, reason in [("tests.jobs:Nope", "has no attribute 'Nope'"),
                         ("no_such_module:f", "No module named 'no_such_module'"),
                         ("no_colon", "expected 'package.module:attr'")]:
        with pytest.raises(NotImportable, match=reason) as info:
            import_by_name(name)
        assert isinstance(info.value, ParacelError) and info.value.name == name
    with pytest.raises(NotImportable, match="'json:__name__': it is a str, not a function"):
        import_function("json:__name__")
    with pytest.raises(ValueError, match="cannot import update function 'tests.jobs:nope': .*has no attribute"):
        resolve("tests.jobs:nope")
    with pytest.raises(LoadError, match="cannot import parser 'tests.jobs:nope': .*has no attribute") as info:
        resolve_parser("tests.jobs:nope")
    assert isinstance(info.value, ParacelError) and isinstance(info.value, ValueError)
