"""Prompt sets: the shipped default and users' txt/jsonl/csv files."""

from __future__ import annotations

import pytest

from sweep.prompts import DEFAULT_PROMPTS, PromptFileError, default_seeds, load_prompts


def test_default_set_is_varied():
    prompts = load_prompts()
    assert DEFAULT_PROMPTS.is_file()
    assert len(prompts) >= 32 and len(set(prompts)) == len(prompts)
    assert all(len(p.split()) >= 5 for p in prompts)
    assert load_prompts(n=3) == prompts[:3]


def test_txt_skips_blanks_and_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# my prompts\n\n  a cat  \na dog\n")
    assert load_prompts(f) == ["a cat", "a dog"]


def test_jsonl_and_csv(tmp_path):
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a cat", "id": 1}\n\n{"prompt": "a dog"}\n')
    assert load_prompts(j) == ["a cat", "a dog"]
    c = tmp_path / "p.csv"
    c.write_text('id,prompt\n1,"a cat, sitting"\n2,a dog\n')
    assert load_prompts(c) == ["a cat, sitting", "a dog"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.txt", "\n# nothing\n", "has no prompts"),
    ("bad.jsonl", '{"prompt": "a"}\nnot json\n', r"bad.jsonl:2 is not JSON"),
    ("nokey.jsonl", '{"text": "a"}\n', 'has no "prompt" string'),
    ("nocol.csv", "text\na cat\n", "has no 'prompt' column"),
])
def test_bad_files(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(f)


def test_missing_file_folder_and_counts(tmp_path):
    with pytest.raises(PromptFileError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")
    with pytest.raises(PromptFileError, match="is a folder"):
        load_prompts(tmp_path)
    with pytest.raises(PromptFileError, match="asked for 100 prompts"):
        load_prompts(n=100)
    with pytest.raises(PromptFileError, match="at least one"):
        load_prompts(n=0)


def test_default_seeds():
    assert default_seeds(3) == [0, 1, 2] and default_seeds(2, start=10) == [10, 11]
