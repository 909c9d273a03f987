"""Config validation: every mistake names the file and the field."""
from __future__ import annotations

import json

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
