"""Every bad data or model input fails before training with a one-line message saying what to fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas
import pytest
import torch

from lora_search.objectives import DataError, LoraObjective, ModelError, Workload


def objective_for(tiny_bert, **changes):
    return LoraObjective(Workload(model=tiny_bert, train_sample=16, eval_sample=8, max_length=16, **changes))


def write(tmp_path, name, rows):
    path = tmp_path / name
    pandas.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("rows", "changes", "message"),
    [
        ([{"review": "good", "label": "a"}] * 4, {}, r"no column 'text' \(columns: review, label\)"),
        ([{"text": "good", "stars": "a"}] * 4, {"label_column": "label"}, "no column 'label'"),
        ([{"text": "good", "label": "a"}] * 10, {}, "one class only"),
        ([{"text": "", "label": "a"}, {"text": None, "label": "b"}], {}, "every row of the training split has an empty"),
    ],
)
def test_bad_csv_data(tmp_path, tiny_bert, rows, changes, message):
    with pytest.raises(DataError, match=message) as error:
        objective_for(tiny_bert, data=write(tmp_path, "data.csv", rows), **changes)
    assert "\n" not in str(error.value)


def test_empty_file(tmp_path, tiny_bert):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        objective_for(tiny_bert, data=str(path))


def test_header_only_file(tmp_path, tiny_bert):
    path = tmp_path / "header.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match="training split is empty"):
        objective_for(tiny_bert, data=str(path))


@pytest.mark.parametrize(
    ("data", "message"),
    [("missing.csv", "does not exist"), ("./nowhere/data.parquet", "does not exist"), ("notes.txt", "unsupported type .txt")],
)
def test_bad_data_paths(tmp_path, tiny_bert, data, message):
    if data == "notes.txt":
        (tmp_path / data).write_text("hello")
    with pytest.raises(DataError, match=message):
        objective_for(tiny_bert, data=str(tmp_path / data) if data == "notes.txt" else data)


def test_uncached_hub_dataset_fails_fast_offline(monkeypatch, tiny_bert):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        objective_for(tiny_bert, data="someone/never-downloaded-dataset")


def test_uncached_hub_model_fails_fast_offline(monkeypatch, sentiment_csv):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        LoraObjective(Workload(model="someone/never-downloaded-model", data=sentiment_csv))


@pytest.mark.parametrize(
    ("model", "message"),
    [("./no/such/model", "model folder './no/such/model' does not exist"), ("{empty}", "has no config.json")],
)
def test_bad_model_paths(tmp_path, sentiment_csv, model, message):
    model = model.replace("{empty}", str(tmp_path))
    with pytest.raises(ModelError, match=message):
        LoraObjective(Workload(model=model, data=sentiment_csv))


def test_a_model_folder_without_weights_is_refused(tmp_path, tiny_bert, sentiment_csv):
    shutil.copy(Path(tiny_bert) / "config.json", tmp_path / "config.json")
    for load_base in (True, False):  # the parent of workers checks the folder without loading it
        with pytest.raises(ModelError, match=r"has no weights \(\*\.safetensors or \*\.bin\)"):
            LoraObjective(Workload(model=str(tmp_path), data=sentiment_csv), load_base=load_base)


def test_a_model_saved_as_a_torch_archive_passes_the_weights_check_and_loads_the_same(tmp_path, tiny_bert, sentiment_csv):
    """pytorch_model.bin, as transformers saved models before safetensors: the check reads its
    archive index and lets it through, and the base loads to the same weights."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_bert, tmp_path / "model")
    weights = load_file(tmp_path / "model" / "model.safetensors")
    torch.save(weights, tmp_path / "model" / "pytorch_model.bin")
    (tmp_path / "model" / "model.safetensors").unlink()
    objective = LoraObjective(Workload(model=str(tmp_path / "model"), data=sentiment_csv))
    loaded = objective.base_model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in weights.items() if name in loaded)
    assert set(weights) <= set(loaded), set(weights) - set(loaded)


def test_a_classifier_saved_for_another_number_of_classes_gets_a_new_head(tmp_path, tiny_bert):
    """The tiny BERT's head has two classes; three-class data gets a fresh seeded head of three,
    where transformers refused the checkpoint, and the parent of workers counts it alike."""
    path = write(tmp_path, "three.csv", [{"text": f"the tea was {word}", "label": word} for word in ["good", "bad", "fine"] * 10])
    objective = objective_for(tiny_bert, data=path)
    assert objective.base_model.classifier.out_features == 3
    assert objective.model_parameters == sum(p.numel() for p in objective.base_model.parameters())
    workload = objective.workload
    assert LoraObjective(workload, load_base=False).model_parameters == objective.model_parameters
    again = LoraObjective(workload)
    assert torch.equal(again.base_model.classifier.weight, objective.base_model.classifier.weight)  # seeded


def test_embedded_model_cannot_do_causal_lm(tmp_path):
    data = write(tmp_path, "text.csv", [{"text": "hello there"}] * 8)
    with pytest.raises(ModelError, match="pass --model with a causal LM"):
        LoraObjective(Workload(data=data, task="causal-lm"))
    # text alone: the embedded classifier misses its label column, or the user a --model
    with pytest.raises(DataError, match="has no column 'label' .*; for causal-lm on the text, pass --model with a causal LM$"):
        LoraObjective(Workload(data=data))


def test_jsonl_file_gets_a_seeded_hold_out(tmp_path, tiny_bert):
    path = tmp_path / "pairs.jsonl"
    pandas.DataFrame([{"text": "fine", "label": "a"}, {"text": "ok", "label": "b"}] * 10).to_json(path, orient="records", lines=True)
    objective = objective_for(tiny_bert, data=str(path))
    assert objective.data.label_names == ["a", "b"]
    assert objective.dataset_size == 12  # 20 rows less two 20% hold-outs: validation and test
