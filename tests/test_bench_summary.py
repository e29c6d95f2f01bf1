"""scripts/bench_summary.py: the per-case median of several bench runs and the count below the floor."""
import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "scripts", "bench_summary.py")
spec = importlib.util.spec_from_file_location("bench_summary", _PATH)
bench_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_summary)


def _doc(fwd, plain_silu, cpu="Test CPU"):
    case = {"shape": [8, 256, 7, 7], "dtype": "float32", "layout": "contiguous", "groups": 32,
            "speedup": {"fwd": fwd, "fwd+bwd": 1.5, "silu_vs_eager": 2.0, "res_relu_vs_eager": 1.2}}
    plain = {"shape": [8, 256, 7, 7], "dtype": "bfloat16", "layout": "channels_last", "groups": 32,
             "speedup": {"fwd": 1.0, "silu": plain_silu, "res_relu": 1.1}}
    return {"meta": {"cpu": cpu, "commit": "abc", "threads": 2, "load_average_start": 0.1}, "cases": [case],
            "plain": [plain], "small": []}


def test_medians_per_case_and_the_count_below_the_floor(tmp_path):
    docs = [_doc(0.90, 0.96), _doc(1.10, 0.94), _doc(0.95, 1.20)]
    text, total, below = bench_summary.summarize(docs, floor=0.97)
    assert total == 7 and below == 2  # fwd median 0.95 and plain silu median 0.96
    assert "| (8, 256, 7, 7) | float32 | contiguous | 32 | 0.95 | 1.50 | 2.00 | 1.20 | 3 |" in text
    assert "plain:silu 0.96x" in text and "cases:fwd 0.95x" in text and "Test CPU" in text
    paths = []
    for i, d in enumerate(docs):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(d))
    assert bench_summary.main([str(p) for p in paths]) == 0


def test_a_bad_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert bench_summary.main([str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


@pytest.mark.parametrize("floor,expected", [(0.5, 0), (3.0, 7)])
def test_floor_moves_the_count(floor, expected):
    assert bench_summary.summarize([_doc(0.9, 0.96)], floor)[2] == expected
