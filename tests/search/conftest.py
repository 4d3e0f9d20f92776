"""Tiny models and data for the search-level tests: built from a config, no download.

A BERT of hidden size 32 with 2 layers and a 30-word vocabulary trains a step in a few
milliseconds; saved with save_pretrained it is passed to the CLI as ``--model PATH``,
and a small CSV of labelled sentences as ``--data PATH``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

POSITIVE = "good great fine tasty fresh lovely".split()
NEGATIVE = "bad awful poor stale bland nasty".split()
FILLER = "the a this food tea coffee snack was is very really quite".split()


def build_tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, set_seed

    words = [*POSITIVE, *NEGATIVE, *FILLER]
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizer(vocab=vocab)
    set_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_reviews_csv(path: Path, rows: int = 160, seed: int = 0) -> Path:
    """Sentences whose label is carried by one sentiment word among fillers."""
    rng = random.Random(seed)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for i in range(rows):
            positive = i % 2 == 0
            words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
            rng.shuffle(words)
            writer.writerow([" ".join(words), "positive" if positive else "negative"])
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_reviews(tmp_path_factory) -> Path:
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv")
