import json

import pandas as pd
import pytest

from crowdless.data import DataError, load_prompts, split_prompts

pytestmark = pytest.mark.unit


def test_embedded_chatterbot_has_prompts_and_references():
    examples, report = load_prompts("embedded:chatterbot")
    assert len(examples) > 1000 and report.skipped < 10
    assert all("conversation" in p for p in report.problems)
    assert all(e.prompt for e in examples)
    assert sum(e.reference is not None for e in examples) > 0.9 * len(examples)


def test_chatterbot_categories():
    science, _ = load_prompts("embedded:chatterbot/science")
    both, _ = load_prompts("embedded:chatterbot/science,trivia")
    assert 0 < len(science) < len(both)
    with pytest.raises(DataError, match="unknown chatterbot categories"):
        load_prompts("embedded:chatterbot/klingon")


def test_jsonl_with_custom_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "hi there", "a": "hello"}\n\n{"q": "bye"}\n')
    examples, report = load_prompts(str(path), prompt_field="q", reference_field="a")
    assert [(e.prompt, e.reference) for e in examples] == [("hi there", "hello"), ("bye", None)]
    assert report.loaded == 2


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "ok"', "invalid JSON"),
    ('{"text": "no prompt"}', "missing field 'prompt'"),
    ('{"prompt": ""}', "must be a non-empty string"),
    ('{"prompt": 5}', "must be a non-empty string"),
    ('["prompt"]', "expected an object"),
    ('{"prompt": "x", "reference": 3}', "'reference' must be a string"),
])
def test_bad_jsonl_row_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "good"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: .*{message}"):
        load_prompts(str(path))


def test_skip_counts_bad_rows(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "a"}\nnot json\n{"prompt": "b"}\n{"other": 1}\n')
    examples, report = load_prompts(str(path), on_bad_row="skip")
    assert [e.prompt for e in examples] == ["a", "b"]
    assert report.skipped == 2 and len(report.problems) == 2
    assert f"{path}:2" in report.problems[0] and f"{path}:4" in report.problems[1]


def test_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"question": ["one?", "two?"], "answer": ["1", "2"]})
    csv, parquet = tmp_path / "d.csv", tmp_path / "d.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet)
    for path in (csv, parquet):
        examples, _ = load_prompts(str(path), prompt_field="question", reference_field="answer")
        assert [(e.prompt, e.reference) for e in examples] == [("one?", "1"), ("two?", "2")]


def test_csv_bad_row_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,reference\nfine,ok\n,missing prompt\n")
    with pytest.raises(DataError, match=rf"{path}:3: field 'prompt'"):
        load_prompts(str(path))


def test_missing_file_and_empty_result(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no usable prompts"):
        load_prompts(str(empty))


def test_unknown_embedded_and_offline_hub_name():
    with pytest.raises(DataError, match="unknown embedded dataset"):
        load_prompts("embedded:squad")
    with pytest.raises(DataError, match="neither a local file nor a loadable hub dataset"):
        load_prompts("no-such-org/no-such-dataset")


def test_split_is_deterministic_and_disjoint():
    examples, _ = load_prompts("embedded:chatterbot/science")
    train, held_out = split_prompts(examples, 0.2, seed=3)
    again = split_prompts(examples, 0.2, seed=3)
    assert (train, held_out) == again
    assert len(held_out) == round(0.2 * len(examples))
    assert sorted(map(json.dumps, [e.prompt for e in train + held_out])) == sorted(
        map(json.dumps, [e.prompt for e in examples]))
    assert split_prompts(examples, 0.2, seed=4) != (train, held_out)
    assert split_prompts(examples, 0.0, seed=3)[1] == []
