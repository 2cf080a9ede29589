import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import DataConfig
from crowdless.data import prompt_sets as data
from crowdless.data.prompt_sets import (
    CONTEXT_CHARS,
    CONTEXT_TURNS,
    SQUAD_PROMPT,
    DataError,
    PromptExample,
    distinct_prompts,
    first_turns,
    load_prompt_split,
    load_prompts,
    normalize_prompt,
    split_prompts,
)

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
    with pytest.raises(DataError, match="unknown embedded dataset.*chatterbot.*embedded:chitchat"):
        load_prompts("embedded:squad")
    with pytest.raises(DataError, match="neither a local file nor a loadable hub dataset"):
        load_prompts("no-such-org/no-such-dataset")


def _prompts(examples):
    return {normalize_prompt(e.prompt) for e in examples}


def test_split_is_deterministic_and_disjoint():
    examples, report = load_prompts("embedded:chatterbot/science")
    train, held_out = split_prompts(examples, 0.2, seed=3)
    again = split_prompts(examples, 0.2, seed=3)
    assert (train, held_out) == again
    assert len(_prompts(held_out)) == round(0.2 * report.distinct_prompts)  # a fifth of the distinct prompts
    assert _prompts(train).isdisjoint(_prompts(held_out))
    assert sorted(map(json.dumps, [e.prompt for e in train + held_out])) == sorted(
        map(json.dumps, [e.prompt for e in examples]))
    assert split_prompts(examples, 0.2, seed=4) != (train, held_out)
    assert split_prompts(examples, 0.0, seed=3)[1] == []


@pytest.mark.parametrize("source", ["embedded:chatterbot", "embedded:chatterbot/computers,science",
                                    "embedded:chitchat"])
@pytest.mark.parametrize("seed", [0, 1])
def test_no_prompt_is_on_both_sides_of_an_embedded_split(source, seed):
    examples, report = load_prompts(source)
    assert report.distinct_prompts < report.loaded  # every embedded corpus repeats some prompts
    train, held_out = split_prompts(examples, 0.1, seed)
    assert held_out and _prompts(train).isdisjoint(_prompts(held_out))
    assert len(train) + len(held_out) == len(examples)


def test_repeated_prompts_in_a_file_stay_on_one_side_and_gather_their_references(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"prompt": f"Question {i}?", "reference": f"answer {i}"} for i in range(30)]
    rows += [{"prompt": "  my printer is NOT printing. ", "reference": f"fix {k}"} for k in range(8)]
    rows += [{"prompt": "My printer is not   printing.", "reference": "fix 0"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    examples, report = load_prompts(str(path))
    assert (report.loaded, report.distinct_prompts) == (39, 31)
    for seed in range(10):
        train, held_out = split_prompts(examples, 0.3, seed)
        assert _prompts(train).isdisjoint(_prompts(held_out))
    printer = [d for d in distinct_prompts(examples) if "printer" in d.prompt]
    assert len(printer) == 1 and printer[0].references == [f"fix {k}" for k in range(8)]  # no repeats


# --- dialogue and QA corpora -------------------------------------------------------------------

def test_embedded_chitchat_gives_a_reply_per_turn_grouped_by_conversation():
    examples, report = load_prompts("embedded:chitchat")
    groups = {e.group for e in examples}
    # 7,168 conversations, of which about 3,150 have one speaker only (no reply): ~131k replies.
    assert len(examples) > 100_000 and len(groups) > 4000 and report.skipped == 0
    assert report.excluded["conversation without a reply"] > 3000
    assert all(e.reference and e.prompt and e.group for e in examples)
    assert max(e.prompt.count("\n") for e in examples) == CONTEXT_TURNS - 1
    train, held_out = split_prompts(examples, 0.1, seed=0)
    assert not {e.group for e in train} & {e.group for e in held_out}
    assert 0.05 * len(examples) < len(held_out) < 0.15 * len(examples)
    # the opening turn of each conversation: one row per conversation with a reply
    opening = first_turns(examples)
    assert len(opening) == len(groups) and all("\n" not in e.prompt for e in opening)


DAILYDIALOG = (
    "The kitchen stinks . __eou__ I'll throw out the garbage . __eou__\n"
    "Good news ! __eou__ Wonderful , I am so happy . __eou__ Me too . __eou__ Great . __eou__\n"
    "\n"
    "The kitchen stinks . __eou__ I'll throw out the garbage . __eou__\n"
)


def test_dailydialog_file_and_folder(tmp_path):
    path = tmp_path / "dialogues_text.txt"
    path.write_text(DAILYDIALOG, encoding="utf-8")
    for source in (f"dailydialog:{path}", f"dailydialog:{tmp_path}"):
        examples, report = load_prompts(source, prompt_field="ignored")
        assert [(e.prompt, e.reference, e.group) for e in examples] == [
            ("The kitchen stinks .", "I'll throw out the garbage .", "1"),
            ("Good news !", "Wonderful , I am so happy .", "2"),
            ("Good news !\nWonderful , I am so happy .", "Me too .", "2"),
            ("Wonderful , I am so happy .\nMe too .", "Great .", "2"),  # at most CONTEXT_TURNS
            ("The kitchen stinks .", "I'll throw out the garbage .", "1"),  # a repeat: same group
        ]
        assert report.loaded == 5 and report.skipped == 0


def test_dialogue_context_is_bounded_in_characters(tmp_path):
    path = tmp_path / "d.txt"
    long = "x" * CONTEXT_CHARS
    path.write_text(f"{long} __eou__ short __eou__ reply __eou__ __eou__\n")
    examples, report = load_prompts(f"dailydialog:{path}")
    # The turn replied to is kept whole, an earlier one only if it fits; the empty turn is counted.
    assert [(e.prompt, e.reference) for e in examples] == [(long, "short"), ("short", "reply")]
    assert report.excluded == {"empty dialogue turn": 1}


def test_bad_dailydialog_line_names_file_and_line(tmp_path):
    path = tmp_path / "dialogues_text.txt"
    path.write_text(DAILYDIALOG + "Hello . __eou__ no end of utterance\n")
    with pytest.raises(DataError, match=rf"{path}:5: text after the last __eou__"):
        load_prompts(f"dailydialog:{path}")
    examples, report = load_prompts(f"dailydialog:{path}", on_bad_row="skip")
    assert len(examples) == 5 and report.skipped == 1 and f"{path}:5" in report.problems[0]
    with pytest.raises(DataError, match="not found"):
        load_prompts(f"dailydialog:{tmp_path / 'nope'}")


def write_cornell(folder, extra_lines="", extra_conversations=""):
    sep = " +++$+++ "
    lines = [
        sep.join(["L196", "u0", "m0", "BIANCA", "Caf\xe9 tonight?"]),
        sep.join(["L195", "u2", "m0", "CAMERON", "Well, I thought we'd start with pronunciation."]),
        sep.join(["L194", "u0", "m0", "BIANCA", "Can we make this quick?"]),
        sep.join(["L200", "u2", "m0", "CAMERON", "Sure."]),
        sep.join(["L201", "u0", "m0", "BIANCA", ""]),
    ]
    conversations = [
        sep.join(["u0", "u2", "m0", "['L194', 'L195', 'L196']"]),
        sep.join(["u0", "u2", "m0", "['L200', 'L201']"]),
    ]
    (folder / "movie_lines.txt").write_text(
        "\n".join(lines) + "\n" + extra_lines, encoding="iso-8859-1")
    (folder / "movie_conversations.txt").write_text(
        "\n".join(conversations) + "\n" + extra_conversations, encoding="iso-8859-1")


def test_cornell_conversations(tmp_path):
    write_cornell(tmp_path)
    for source in (f"cornell:{tmp_path}", f"cornell:{tmp_path / 'movie_lines.txt'}"):
        examples, report = load_prompts(source)
        assert [(e.prompt, e.reference, e.group) for e in examples] == [
            ("Can we make this quick?", "Well, I thought we'd start with pronunciation.",
             "m0/L194"),
            ("Can we make this quick?\nWell, I thought we'd start with pronunciation.",
             "Caf\xe9 tonight?", "m0/L194"),
        ]
        # L201 is empty, which leaves the second conversation without a reply.
        assert report.excluded == {"empty dialogue turn": 1, "conversation without a reply": 1}


@pytest.mark.parametrize("lines,conversations,file,line,message", [
    ("L300 +++$+++ u0 +++$+++ m0\n", "", "movie_lines.txt", 6, "expected 5 fields"),
    ("", "u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L194', 'L999']\n", "movie_conversations.txt", 3,
     r"line ids not in movie_lines.txt: \['L999'\]"),
    ("", "u0 +++$+++ u2 +++$+++ m0 +++$+++ ['L194', 'L195'\n", "movie_conversations.txt", 3,
     "expected a list of line ids"),
    ("", "u0 +++$+++ u2 +++$+++ ['L194']\n", "movie_conversations.txt", 3, "expected 4 fields"),
])
def test_bad_cornell_line_names_file_and_line(tmp_path, lines, conversations, file, line, message):
    write_cornell(tmp_path, lines, conversations)
    with pytest.raises(DataError, match=rf"{tmp_path / file}:{line}: {message}"):
        load_prompts(f"cornell:{tmp_path}")
    examples, report = load_prompts(f"cornell:{tmp_path}", on_bad_row="skip")
    assert len(examples) == 2 and report.skipped == 1


def test_cornell_needs_both_files(tmp_path):
    write_cornell(tmp_path)
    (tmp_path / "movie_conversations.txt").unlink()
    with pytest.raises(DataError, match="not found: .*movie_conversations.txt"):
        load_prompts(f"cornell:{tmp_path}")


SQUAD_V2 = {
    "version": "v2.0",
    "data": [
        {"title": "Normans", "paragraphs": [
            {"context": "The Normans gave their name to Normandy, a region in France.", "qas": [
                {"question": "In what country is Normandy located?", "id": "a",
                 "answers": [{"text": "France", "answer_start": 56}, {"text": "in France",
                                                                       "answer_start": 53}],
                 "is_impossible": False},
                {"question": "Who gave their name to France?", "id": "b", "answers": [],
                 "plausible_answers": [{"text": "The Normans", "answer_start": 0}],
                 "is_impossible": True},
            ]},
            {"context": "Rollo was their first ruler.", "qas": [
                {"question": "Who was the first ruler?", "id": "c",
                 "answers": [{"text": "Rollo", "answer_start": 0}], "is_impossible": False},
            ]},
        ]},
        {"title": "Physics", "paragraphs": [
            {"context": "Force equals mass times acceleration.", "qas": [
                {"question": "What equals mass times acceleration?", "id": "d",
                 "answers": [{"text": "Force", "answer_start": 0}]},  # v1.1: no is_impossible
            ]},
        ]},
    ],
}


def test_squad_file(tmp_path):
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(SQUAD_V2, indent=1))
    examples, report = load_prompts(f"squad:{path}")
    assert [(e.reference, e.group) for e in examples] == [
        ("France", "Normans"), ("Rollo", "Normans"), ("Force", "Physics")]
    assert examples[0].prompt == SQUAD_PROMPT.format(
        context="The Normans gave their name to Normandy, a region in France.",
        question="In what country is Normandy located?")
    assert report.excluded == {"unanswerable question": 1} and report.skipped == 0


def test_bad_squad_names_file_and_place(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n  {"title": "A", "paragraphs": []},\n  {"title": oops}\n]}')
    with pytest.raises(DataError, match=rf"{path}:3: invalid JSON"):
        load_prompts(f"squad:{path}")
    broken = json.loads(json.dumps(SQUAD_V2))
    broken["data"][0]["paragraphs"][1]["qas"][0]["answers"] = "Rollo"
    path.write_text(json.dumps(broken))
    with pytest.raises(DataError, match=rf"{path}: data\[0\]\.paragraphs\[1\]\.qas\[0\]: expected"):
        load_prompts(f"squad:{path}")
    examples, report = load_prompts(f"squad:{path}", on_bad_row="skip")
    assert len(examples) == 2 and report.skipped == 1
    path.write_text('{"version": "v2.0"}')
    with pytest.raises(DataError, match="expected a SQuAD object"):
        load_prompts(f"squad:{path}")


def test_squad_hub_rows_map_like_the_file(monkeypatch):
    rows = [
        {"id": "a", "title": "Normans", "context": "Normandy is in France.",
         "question": "Where is Normandy?", "answers": {"text": ["France"], "answer_start": [15]}},
        {"id": "b", "title": "Normans", "context": "Normandy is in France.",
         "question": "Who named France?", "answers": {"text": [], "answer_start": []}},
    ]
    monkeypatch.setattr(data, "_hub_rows", lambda name, split: (
        (f"{name}[{split}] row {i}", row) for i, row in enumerate(rows)))
    examples, report = load_prompts("squad_v2", split="validation")
    assert [(e.reference, e.group) for e in examples] == [("France", "Normans")]
    assert examples[0].prompt.endswith("Question: Where is Normandy?\nAnswer in a few words.")
    assert report.excluded == {"unanswerable question": 1}


# --- splitting by group --------------------------------------------------------------------------

def grouped_examples(seed):
    rng = np.random.default_rng(seed)
    examples = [PromptExample(f"p{g}.{t}", "r", group=f"g{g}")
                for g in range(40) for t in range(int(rng.integers(1, 12)))]
    return examples + [PromptExample(f"loose{i}") for i in range(5)]  # no group: a group each


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3])
def test_split_never_puts_a_group_on_both_sides(seed, fraction):
    examples = grouped_examples(seed)
    train, held_out = split_prompts(examples, fraction, seed)
    assert {e.group for e in train if e.group}.isdisjoint({e.group for e in held_out if e.group})
    assert sorted(e.prompt for e in train + held_out) == sorted(e.prompt for e in examples)
    units = len({e.group or e.prompt for e in examples})
    assert train and len({e.group or e.prompt for e in held_out}) == max(1, round(fraction * units))
    assert split_prompts(examples, fraction, seed) == (train, held_out)
    assert split_prompts(examples, 0.0, seed)[1] == []


def test_split_without_groups_holds_out_a_share_of_prompts_in_the_seeded_order():
    examples = [PromptExample(f"p{i}") for i in range(20)]
    order = [examples[i] for i in np.random.default_rng(7).permutation(20)]
    train, held_out = split_prompts(examples, 0.25, seed=7)
    assert len(held_out) == 5 and len(train) == 15
    assert held_out == [e for e in order if e in held_out] and train == [e for e in order if e in train]


def test_a_prompt_larger_than_the_held_out_share_stays_in_training():
    examples = [PromptExample("hi", f"r{k}") for k in range(50)] + [PromptExample(f"p{i}") for i in range(50)]
    for seed in range(10):
        train, held_out = split_prompts(examples, 0.1, seed)
        assert "hi" in _prompts(train) and len(held_out) == 5


def test_max_prompts_then_split_by_conversation(tmp_path):
    path = tmp_path / "dialogues_text.txt"
    path.write_text("".join(f"a{i} __eou__ b{i} __eou__ c{i} __eou__ d{i} __eou__\n"
                            for i in range(30)))
    config = DataConfig(source=f"dailydialog:{path}", eval_fraction=0.2, max_prompts=20)
    train, held_out, _ = load_prompt_split(config, seed=1)
    assert len(train) + len(held_out) == 20  # 3 replies a dialogue: the 7th is cut after 2
    assert held_out and not {e.group for e in train} & {e.group for e in held_out}


def test_an_eval_source_is_the_held_out_set_and_its_prompts_never_train(tmp_path):
    """data.eval_source (the tuning service's validation_file): every prompt of data.source trains
    but those the eval source holds, and the held-out set is the eval source as it is."""
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(f'{{"prompt": "question {i}?"}}\n' for i in range(5)))
    eval_file.write_text('{"prompt": "Question 1?", "reference": "one"}\n{"prompt": "new?", "reference": "n"}\n')
    config = DataConfig(source=str(train_file), eval_fraction=0.5, eval_source=str(eval_file))
    train, held_out, _ = data.load_prompt_split(config, seed=0)
    assert [e.prompt for e in train] == ["question 0?", "question 2?", "question 3?", "question 4?"]
    assert [(e.prompt, e.reference) for e in held_out] == [("Question 1?", "one"), ("new?", "n")]
    train_file.write_text('{"prompt": "new?"}\n')
    with pytest.raises(data.DataError, match="none left to train on"):
        data.load_prompt_split(config, seed=0)
