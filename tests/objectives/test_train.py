"""Full training with a preset: the best checkpoint chosen on validation, scored on test."""

from __future__ import annotations

import json
import math

import pandas
import pytest
import torch

from lora_search.objectives import Workload, train_with_preset

POSITIVE = "good great lovely tasty fresh perfect delicious excellent".split()
NEGATIVE = "bad awful stale bland broken rotten terrible poor".split()


def reviews(count: int, positive_share: float, start: int) -> pandas.DataFrame:
    """Unique texts (each names its row) carrying their label's sentiment words; ``positive_share`` of them 'pos'."""
    positives = round(count * positive_share)
    words = {"pos": POSITIVE, "neg": NEGATIVE}
    labels = ["pos" if i < positives else "neg" for i in range(count)]
    return pandas.DataFrame({
        "text": [f"{words[label][i % 8]} {words[label][(i + 3) % 8]} tea row{start + i}" for i, label in enumerate(labels)],
        "label": labels,
    })


def evaluate_adapter(model_folder: str, adapter: str, frame: pandas.DataFrame, label_names: list[str]) -> dict[str, float]:
    """Loss and accuracy of the saved adapter on ``frame``, computed without the Trainer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = AutoModelForSequenceClassification.from_pretrained(model_folder, num_labels=len(label_names))
    model = PeftModel.from_pretrained(base, adapter).eval()
    batch = tokenizer(list(frame["text"]), truncation=True, max_length=16, padding=True, return_tensors="pt")
    labels = torch.tensor([label_names.index(label) for label in frame["label"]])
    with torch.no_grad():
        logits = model(**batch).logits
    return {"loss": torch.nn.functional.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(-1) == labels).float().mean().item()}


def test_train_scores_the_kept_checkpoint_on_the_test_split(tiny_bert, good_config, tmp_path, monkeypatch):
    import datasets

    from lora_search.objectives import _data

    # a hub dataset whose test split is 90% 'pos' while validation is balanced
    splits = {"train": reviews(96, 0.5, 0), "validation": reviews(32, 0.5, 1000), "test": reviews(40, 0.9, 2000)}
    monkeypatch.setattr(_data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: datasets.DatasetDict(
        {split: datasets.Dataset.from_pandas(frame) for split, frame in splits.items()}))
    workload = Workload(model=tiny_bert, data="someone/reviews", max_length=16, torch_threads=1)
    config = good_config.replace(num_train_epochs=1, eval_steps=4, save_steps=4, early_stopping_patience=2)  # half-trained: errs
    record = train_with_preset(workload, config, tmp_path, progress=False)

    assert json.loads((tmp_path / "training.json").read_text()) == record
    assert record["splits"] == {"train": {"examples": 96, "source": "someone/reviews"},
                                "validation": {"examples": 32, "source": "split 'validation'"},
                                "test": {"examples": 40, "source": "split 'test'"}}
    metrics = record["metrics"]
    assert set(metrics) == {f"{role}_{name}" for role in ("validation", "test") for name in ("loss", "accuracy", "f1")}
    # the re-evaluation runs in fp32 on the CPU; on a GPU the Trainer scored over a bf16 base
    # (a row near the boundary may flip)
    on_gpu = torch.cuda.is_available()
    rel = 2e-2 if on_gpu else 1e-4
    for role, frame in (("validation", splits["validation"]), ("test", splits["test"])):
        independent = evaluate_adapter(tiny_bert, str(tmp_path / "adapter"), frame, ["neg", "pos"])
        assert metrics[f"{role}_loss"] == pytest.approx(independent["loss"], rel=rel)
        assert metrics[f"{role}_accuracy"] == (pytest.approx(independent["accuracy"], abs=1.5 / len(frame)) if on_gpu
                                               else pytest.approx(independent["accuracy"]))
    # the skewed test split scores differently from validation
    assert metrics["test_accuracy"] != metrics["validation_accuracy"]
    assert metrics["test_loss"] != pytest.approx(metrics["validation_loss"], rel=1e-3)
    epochs = record["epochs"]
    assert epochs["planned"] == 1 and 0 < epochs["best_checkpoint"] <= epochs["trained"] <= 1


def test_train_on_a_file_holds_out_validation_and_test(tiny_bert, sentiment_csv, good_config, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    workload = Workload(model=tiny_bert, data=sentiment_csv, max_length=16, torch_threads=1)
    config = good_config.replace(num_train_epochs=2, eval_steps=9, save_steps=9, early_stopping_patience=2)
    record = train_with_preset(workload, config, tmp_path, progress=False)
    # 240 rows: 48 held out for validation and 48 for test (20% each), 144 left to train on
    assert {role: split["examples"] for role, split in record["splits"].items()} == {"train": 144, "validation": 48, "test": 48}
    # balanced labels (chance 0.5); at least 36 of 48 right (0.79 with torch 2.6, over 0.8 with 2.13)
    assert record["metrics"]["test_accuracy"] >= 0.75
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, tmp_path / "adapter"), PeftModel)


def test_train_takes_the_effective_batch_of_every_gpu_on_the_devices_it_has(tiny_bert, sentiment_csv, good_config, tmp_path,
                                                                            monkeypatch):
    """A preset's effective batch counts the host's GPUs (8 per device x 1 x 2 GPUs = 16 per
    step). Where the Trainer cannot spread batches over them (a quantized base; here the CPU
    of a host said to have two GPUs) it accumulates the other GPU's pass on the one it has."""
    from lora_search.objectives import _hardware

    workload = Workload(model=tiny_bert, data=sentiment_csv, max_length=16, torch_threads=1)
    config = good_config.replace(num_train_epochs=1)
    alone = train_with_preset(workload, config, tmp_path / "one", progress=False)
    assert alone["batch"] == {"per_device": 8, "devices": 1, "accumulation": 1, "examples_per_step": 8, "optimizer_steps": 18}  # 144 rows / 8
    monkeypatch.setattr(_hardware, "detect_hardware",
                        lambda: {"accelerator": "cuda", "devices": 2, "gpu_memory_gb": 24.0, "bf16_supported": True})
    spread = train_with_preset(workload, config, tmp_path / "two", progress=False)
    assert spread["fitted"]["profile"]["devices"] == 2 and spread["config"] == alone["config"]  # the preset as written
    assert spread["batch"] == {"per_device": 8, "devices": 1, "accumulation": 2, "examples_per_step": 16, "optimizer_steps": 9}


def test_causal_lm_training_reports_perplexity_of_both_splits(tiny_gpt2, qa_jsonl, good_config, tmp_path):
    workload = Workload(model=tiny_gpt2, data=qa_jsonl, prompt_column="prompt", response_column="response", metric="perplexity",
                        max_length=24, torch_threads=1)
    record = train_with_preset(workload, good_config.replace(num_train_epochs=1, eval_steps=4, save_steps=4), tmp_path, progress=False)
    metrics = record["metrics"]
    assert set(metrics) == {"validation_loss", "validation_perplexity", "test_loss", "test_perplexity"}
    for role in ("validation", "test"):
        assert metrics[f"{role}_perplexity"] == pytest.approx(math.exp(metrics[f"{role}_loss"]))


def test_fit_to_data_trains_the_preset_refitted_to_the_training_split(tiny_bert, sentiment_csv, good_config, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from lora_search.spaces import RunProfile, TrainingConfig, rederive_for_dataset

    workload = Workload(model=tiny_bert, data=sentiment_csv, max_length=16, torch_threads=1)
    # written for a large dataset: one epoch, evaluated every 100 steps (the 144 rows make 18)
    config = good_config.replace(num_train_epochs=1, eval_steps=100, save_steps=100, logging_steps=50)
    parameters = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).num_parameters()
    expected, reasons = rederive_for_dataset(config, RunProfile(dataset_size=144, model_parameters=parameters))

    as_written = train_with_preset(workload, config, tmp_path / "as-written", progress=False)
    fitted = train_with_preset(workload, config, tmp_path / "fitted", fit_to_data=True, progress=False)

    assert as_written["config"] == config.to_dict() and as_written["epochs"]["planned"] == 1
    assert fitted["config"] == expected.to_dict() and fitted["epochs"]["planned"] == expected.num_train_epochs
    # the guide's band for 144 examples is 5-10 epochs, evaluated each epoch (18 steps)
    assert (expected.num_train_epochs, expected.eval_strategy, expected.eval_steps) == (5, "epoch", 18)
    changes = fitted["fitted"]["changes"]
    assert changes["num_train_epochs"] == {"preset": 1, "fitted": 5, "reason": reasons["num_train_epochs"]}
    assert set(changes) == set(reasons) and {"eval_strategy", "eval_steps", "save_steps"} <= set(changes)
    # both runs record the same fit for the same data; only one applied it
    assert (as_written["fitted"]["applied"], fitted["fitted"]["applied"]) == (False, True)
    assert as_written["fitted"]["changes"] == changes
    assert fitted["fitted"]["profile"]["dataset_size"] == 144
    assert TrainingConfig.from_dict(json.loads((tmp_path / "fitted" / "training.json").read_text())["config"]) == expected


def test_out_of_memory_says_what_to_change_and_other_settings_start_afresh(tiny_bert, sentiment_csv, good_config, tmp_path,
                                                                          monkeypatch):
    """A GPU's out-of-memory error (raised by the embeddings' forward while training: the
    one thing a CPU cannot be made to run out of) ends the training with what to change;
    it stopped before its first checkpoint, so the same folder takes the changed preset."""
    import torch
    from transformers.models.bert import modeling_bert

    from lora_search.objectives import InfeasibleConfigError

    forward = modeling_bert.BertEmbeddings.forward

    def out_of_memory(self, *args, **kwargs):
        if self.training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, *args, **kwargs)

    workload = Workload(model=tiny_bert, data=sentiment_csv, max_length=16, torch_threads=1)
    config = good_config.replace(num_train_epochs=1)
    monkeypatch.setattr(modeling_bert.BertEmbeddings, "forward", out_of_memory)
    with pytest.raises(InfeasibleConfigError) as raised:
        train_with_preset(workload, config, tmp_path, progress=False)
    assert str(raised.value) == (
        "out of memory training 8 example(s) per device of up to 16 tokens (CUDA out of memory. Tried to allocate 2.00 GiB): "
        "lower per_device_train_batch_size (more gradient_accumulation_steps keep the effective batch), turn on "
        "gradient_checkpointing, shorten --max-length or load the base with --quantize 4bit")
    assert not (tmp_path / "training.json").exists()

    monkeypatch.setattr(modeling_bert.BertEmbeddings, "forward", forward)
    smaller = config.replace(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    record = train_with_preset(workload, smaller, tmp_path, progress=False)
    assert record["batch"] == {"per_device": 4, "devices": 1, "accumulation": 2, "examples_per_step": 8, "optimizer_steps": 18}
