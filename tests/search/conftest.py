"""Tiny models and data for the search-level tests: built from a config, no download.

A BERT of hidden size 32 with 2 layers and a 30-word vocabulary trains a step in a few
milliseconds; saved with save_pretrained it is passed to the CLI as ``--model PATH``,
and a small CSV of labelled sentences as ``--data PATH``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import random
import signal
from dataclasses import dataclass
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


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: object) -> CliResult:
    """``lora-search ARGS`` in this process (the real parser and commands), output captured."""
    from lora_search._cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit:  # argparse rejects options this way
            code = exit.code
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_options(tiny_bert, tiny_reviews):
    """Model and data options of a search on the tiny BERT: a trial takes about a second."""

    def options(train_sample: int = 48) -> list[str]:
        return [
            "--model", str(tiny_bert), "--data", str(tiny_reviews), "--train-sample", str(train_sample),
            "--eval-sample", "32", "--max-length", "16", "--evaluations", "3", "--threads", "1",
        ]

    return options


@pytest.fixture(scope="session")
def searched(tmp_path_factory, tiny_options):
    """A 3-trial quick-experiment study named 'tiny', made with `lora-search run` on an SQLite storage."""
    folder = tmp_path_factory.mktemp("search")
    storage = f"sqlite:///{folder / 'studies.db'}"
    options = tiny_options()
    result = run_cli("run", "--space", "quick-experiment", "--trials", 3, "--study", "tiny", "--storage", storage, *options)
    assert result.code == 0, result.err
    return {"storage": storage, "options": options, "first": result, "folder": folder}


@pytest.fixture
def ctrl_c_as_in_a_terminal():
    """SIGINT raises KeyboardInterrupt for the test's duration: a test run started in the
    background of a script inherits SIGINT ignored."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)
