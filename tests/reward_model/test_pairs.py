"""The preference-data contract: loading, parsing (text, conversations, optional prompt and margin, bad rows) and
encoding (EOS, chat template, truncation sides, empty texts)."""

from __future__ import annotations

import json

import pytest

from alignrl.data import DataError
from alignrl.quickstart.tiny_model import build_tokenizer
from alignrl.reward_model.pairs import (BadRow, PreferenceDataError, encode, load_table, parse_preference_rows,
                                        parse_response_rows, truncate)



def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path

# A template that marks roles, so the tests can see the messages were rendered in order through it.
ROLE_TEMPLATE = "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_text_pairs_with_and_without_prompt_and_margin():
    rows = [{"prompt": "1+1=", "chosen": "2", "rejected": "3", "margin": 1.5, "source": "a"},
            {"chosen": "yes", "rejected": "no"}]
    pairs, bad = parse_preference_rows(rows, "prefs.jsonl")
    assert bad == []
    assert (pairs[0].index, pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == (0, "1+1=", "2", "3")
    assert pairs[0].margin == 1.5 and pairs[0].extra == {"source": "a"}
    assert (pairs[1].prompt, pairs[1].margin, pairs[1].extra) == (None, None, {})


def test_conversations_and_mixed_rows_become_conversations():
    rows = [{"prompt": chat(("user", "hi")), "chosen": chat(("assistant", "hello")),
             "rejected": chat(("assistant", "go away"))},
            {"prompt": "hi", "chosen": chat(("assistant", "hello")), "rejected": "go away"},
            {"chosen": chat(("user", "q"), ("assistant", "a")), "rejected": chat(("user", "q"), ("assistant", "b"))}]
    pairs, _ = parse_preference_rows(rows, "prefs.jsonl")
    assert pairs[0].chosen == chat(("assistant", "hello"))
    assert pairs[1].prompt == chat(("user", "hi"))
    assert pairs[1].rejected == chat(("assistant", "go away"))
    assert pairs[2].prompt is None and pairs[2].chosen[0] == {"role": "user", "content": "q"}


@pytest.mark.parametrize("row, field, words", [
    ({"prompt": "p", "rejected": "r"}, "chosen", "is missing"),
    ({"chosen": None, "rejected": "r"}, "chosen", "is null"),
    ({"chosen": "c", "rejected": 7}, "rejected", "must be text"),
    ({"chosen": [{"role": "assistant"}], "rejected": "r"}, "chosen", "message 0"),
    ({"chosen": ["hello"], "rejected": "r"}, "chosen", "message 0"),
    ({"chosen": "c", "rejected": "r", "margin": "big"}, "margin", "finite number"),
    ({"chosen": "c", "rejected": "r", "prompt": {"text": "x"}}, "prompt", "must be text"),
])
def test_a_bad_row_names_source_row_and_field(row, field, words):
    rows = [{"chosen": "c", "rejected": "r"}, {"chosen": "c", "rejected": "r"}, row]
    with pytest.raises(PreferenceDataError) as info:
        parse_preference_rows(rows, "data/prefs.jsonl")
    message = str(info.value)
    assert message.startswith("data/prefs.jsonl, row 2: ")
    assert f"'{field}'" in message and words in message and "--skip-bad-rows" in message
    assert isinstance(info.value, ValueError)


def test_skip_bad_rows_returns_them_with_reasons():
    rows = [{"chosen": "c", "rejected": "r"}, {"chosen": "c"}, {"chosen": "c", "rejected": "r", "margin": True}]
    pairs, bad = parse_preference_rows(rows, "prefs.jsonl", skip_bad_rows=True)
    assert [p.index for p in pairs] == [0]
    assert [b.index for b in bad] == [1, 2]
    assert isinstance(bad[0], BadRow) and "'rejected' is missing" in bad[0].reason
    assert "'margin'" in bad[1].reason


def test_custom_field_names_and_no_margin_column():
    rows = [{"q": "p", "good": "c", "bad": "r", "margin": "not used"}]
    pairs, _ = parse_preference_rows(rows, "x", prompt_field="q", chosen_field="good", rejected_field="bad",
                                     margin_field=None)
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].margin, pairs[0].extra) == ("p", "c", None,
                                                                                    {"margin": "not used"})


def test_response_rows():
    rows = [{"prompt": "p", "response": "r", "id": 3}, {"response": chat(("assistant", "a"))}, {"prompt": "p"}]
    items, bad = parse_response_rows(rows, "resp.jsonl", skip_bad_rows=True)
    assert [(i.index, i.prompt, i.extra) for i in items] == [(0, "p", {"id": 3}), (1, None, {})]
    assert bad[0].index == 2 and "'response' is missing" in bad[0].reason
    with pytest.raises(PreferenceDataError, match=r"resp.jsonl, row 2: field 'response' is missing"):
        parse_response_rows(rows, "resp.jsonl")


def test_load_table_local_files(tmp_path):
    rows = [{"prompt": "p", "chosen": chat(("assistant", "c")), "rejected": "r"}]
    jsonl = write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps({"test": rows}))
    assert load_table(str(jsonl)) == rows
    assert load_table(str(tmp_path / "a.json"), split="test") == rows
    import datasets

    datasets.Dataset.from_list(rows * 2).to_parquet(str(tmp_path / "a.parquet"))
    loaded = load_table(str(tmp_path / "a.parquet"))
    pairs, _ = parse_preference_rows(loaded, "a.parquet")
    assert len(pairs) == 2 and pairs[1].chosen == chat(("assistant", "c")) and pairs[1].rejected == chat(
        ("assistant", "r"))


def test_load_table_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: data file not found"):
        load_table(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"chosen": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2: not valid JSON"):
        load_table(str(tmp_path / "bad.jsonl"))


def test_encode_text_appends_eos_once(tokenizer):
    encoded = encode(tokenizer, "1+2=", "3", max_length=None)
    assert tokenizer.decode(encoded.input_ids) == "1+2=3</s>"
    assert not encoded.truncated and not encoded.empty and encoded.length == 6
    again = encode(tokenizer, "1+2=", "3</s>", max_length=None)
    assert again.input_ids == encoded.input_ids
    assert tokenizer.decode(encode(tokenizer, None, "abc", None).input_ids) == "abc</s>"


def test_encode_conversation_goes_through_the_chat_template(tokenizer):
    tok = build_tokenizer()
    tok.chat_template = ROLE_TEMPLATE
    encoded = encode(tok, chat(("user", "1+2=")), chat(("assistant", "3")), max_length=None)
    assert tok.decode(encoded.input_ids) == "u:1+2=\na:3\n"  # no EOS added: the template decides
    mixed = encode(tok, "1+2=", chat(("assistant", "3")), max_length=None)
    assert mixed.input_ids == encoded.input_ids


def test_truncation_sides(tokenizer):
    left = encode(tokenizer, "abcdef", "gh", max_length=4, truncation_side="left")
    right = encode(tokenizer, "abcdef", "gh", max_length=4, truncation_side="right")
    assert tokenizer.decode(left.input_ids) == "fgh</s>"
    assert tokenizer.decode(right.input_ids) == "abcd"
    assert left.truncated and right.truncated and left.length == right.length == 9
    fits = encode(tokenizer, "ab", "c", max_length=4)
    assert not fits.truncated and len(fits.input_ids) == 4
    assert truncate([1, 2, 3], 2, "left") == [2, 3] and truncate([1, 2, 3], None, "right") == [1, 2, 3]
    with pytest.raises(ValueError, match="'left' or 'right'"):
        truncate([1], 1, "middle")


def test_empty_responses_are_flagged_not_dropped(tokenizer):
    text = encode(tokenizer, "p", "  ", max_length=None)
    assert text.empty and tokenizer.decode(text.input_ids) == "p  </s>"
    conversation = encode(tokenizer, None, [], max_length=None)
    assert conversation.empty and conversation.input_ids == [tokenizer.eos_token_id] and conversation.length == 0
    blank_message = encode(tokenizer, chat(("user", "q")), chat(("assistant", "")), max_length=None)
    assert blank_message.empty and blank_message.input_ids
