"""The JSONL log: one flushed record per line, survives crashes and torn tails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from meter.exporters.jsonl import JsonlWriter, read_jsonl


def test_appends_one_record_per_line(tmp_path):
    path = tmp_path / "r.jsonl"
    w = JsonlWriter(path)
    w.write({"name": "a", "energy_j": 1.5})
    w.write({"name": "b", "energy_j": float("nan")})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["name"] for x in lines] == ["a", "b"]
    assert json.loads(lines[1])["energy_j"] is None  # NaN is not JSON: written as null


def test_torn_tail_from_a_crash_is_isolated(tmp_path, caplog):
    path = tmp_path / "r.jsonl"
    path.write_text('{"name": "ok"}\n{"name": "tor')  # a write cut by a power loss
    JsonlWriter(path).write({"name": "next"})
    names = [r["name"] for r in read_jsonl(path)]
    assert names == ["ok", "next"]
    assert "torn" in caplog.text


def test_records_survive_a_crash_of_the_writer(tmp_path):
    path = tmp_path / "r.jsonl"
    code = textwrap.dedent(
        f"""
        import os
        from meter.exporters.jsonl import JsonlWriter
        w = JsonlWriter({str(path)!r})
        for i in range(5):
            w.write({{"i": i, "pad": "x" * 1000}})
        os._exit(3)  # dies without any cleanup or buffered-file flush
        """
    )
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    rc = subprocess.run([sys.executable, "-c", code], env=env).returncode
    assert rc == 3
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        JsonlWriter(tmp_path / "nope" / "r.jsonl")


def test_writer_as_meter_sink(meter_factory, tmp_path):
    path = tmp_path / "w.jsonl"
    m = meter_factory(300.0, sinks=[JsonlWriter(path)])
    with m.measure("epoch"):
        pass
    (record,) = list(read_jsonl(path))
    assert record["name"] == "epoch"
    assert record["devices"]["gpu:0"]["method"] == "simulated"
