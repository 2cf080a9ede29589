import json

import pytest

pytestmark = pytest.mark.unit


def test_render_states_command_date_machine_and_every_figure(tmp_path):
    from bench.render import render

    record = {"command": "python bench/bench_ranking.py --answers 8", "date": "2026-12-05 17:00 UTC",
              "commit": "abc1234", "machine": {"cpu": "AMD EPYC 7B13", "cpu_count": 2, "platform": "Linux",
                                               "cuda": None},
              "figures": {"answers_8": {"textrank_ms": 1.23456, "answers_per_second": 6480.0},
                          "sizes": [8, 16, 64]}}
    (tmp_path / "ranking.json").write_text(json.dumps(record))
    text = render(tmp_path)
    assert "## ranking" in text and "`python bench/bench_ranking.py --answers 8`" in text
    assert "2026-12-05 17:00 UTC, commit abc1234" in text and "AMD EPYC 7B13, 2 threads" in text
    assert "| answers_8.textrank_ms | 1.235 |" in text and "| answers_8.answers_per_second | 6480 |" in text
    assert "| sizes | [8, 16, 64] |" in text


def test_render_without_results_says_so(tmp_path):
    from bench.render import render

    assert "No results yet" in render(tmp_path)
