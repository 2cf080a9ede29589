import json

import pytest

from crowdless.cli.rank import main

pytestmark = pytest.mark.unit

GROUPS = [
    {"prompt": "What is the capital of France?", "answers": [
        "Paris is the capital of France.", "The capital of France is Paris.",
        "France's capital city is Paris.", "I like turtles.", "Bananas are yellow.",
        "It is Berlin. Germany is large.", "Paris, on the Seine.", "No idea, sorry."]},
    {"prompt": "Name a colour", "answers": ["Red", "Blue", "red"]},
]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_ranks_a_real_file(tmp_path, capsys):
    source, out, pairs = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    _write(source, [json.dumps(g) for g in GROUPS])
    assert main([str(source), str(out), "--pairs", str(pairs), "ranking.noise_share=0.5"]) == 0
    ranked = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in ranked] == [g["prompt"] for g in GROUPS]
    first = ranked[0]
    assert len(first["scores"]) == 8 and abs(sum(first["scores"]) - 1) < 1e-6
    assert first["ranked_answers"][0] in GROUPS[0]["answers"][:3] + GROUPS[0]["answers"][6:7]
    flat = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(flat) == sum(len(r["pairs"]) for r in ranked) > 0
    assert any(p["noised"] for p in flat)
    assert all(p["chosen"] != p["rejected"] for p in flat)
    assert "preference pairs" in capsys.readouterr().out
    # same seed, same output
    again = tmp_path / "again.jsonl"
    main([str(source), str(again), "ranking.noise_share=0.5"])
    assert again.read_text() == out.read_text()


def test_bad_input_names_file_and_line(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    _write(source, [json.dumps(GROUPS[0]), '{"prompt": "x", "answers": "not a list"}'])
    assert main([str(source), str(tmp_path / "out.jsonl")]) == 2
    assert f"{source}:2: field 'answers' must be a list of strings" in capsys.readouterr().err


def test_skip_bad_lines(tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, ["{broken", json.dumps(GROUPS[1]), '{"answers": []}'])
    assert main([str(source), str(out), "--skip-bad-lines"]) == 0
    assert len(out.read_text().splitlines()) == 1
    assert "skipped 2 bad lines" in capsys.readouterr().err


def test_bad_config_override_and_missing_file(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    _write(source, [json.dumps(GROUPS[1])])
    assert main([str(source), str(tmp_path / "o.jsonl"), "ranking.noise=0.5"]) == 2
    assert "ranking.noise: unknown key" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")]) == 2
    assert "input file not found" in capsys.readouterr().err


def test_readme_example_puts_the_off_topic_answers_on_the_rejected_side(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "answers.jsonl"
    out, pairs = tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl"
    assert main([str(example), str(out), "--pairs", str(pairs)]) == 0
    first_prompt = json.loads(example.read_text().splitlines()[0])["prompt"]
    flat = [p for p in map(json.loads, pairs.read_text().splitlines()) if p["prompt"] == first_prompt]
    rejected = {p["rejected"] for p in flat if not p["noised"]}
    chosen = {p["chosen"] for p in flat}
    off_topic = {"I like turtles.", "Bananas are yellow fruit.", "It is Berlin. Germany is big."}
    assert off_topic <= rejected
    assert not off_topic & chosen
