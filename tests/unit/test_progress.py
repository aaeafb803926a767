"""Progress on long work (issue 18): flows.logs.progress and the chunked transform behind it.

The TTY case drives a real Rich bar on a pseudo-terminal (no mock of Rich); the plain case
reads what a log or pipe receives.
"""

from __future__ import annotations

import io
import os
import pty
import select
import sys

import numpy as np
import pandas as pd

from labelloop.flows import logs, scoring
from labelloop.flows.logs import Progress, progress
from labelloop.flows.stages import RoundFeatures
from labelloop.tasks.demo_data import generate_demo_corpus
from labelloop.tasks.train import fit_featurizer


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drain(master: int) -> bytes:
    """Everything written to the pseudo-terminal. Linux hands bytes from the slave to the master side
    asynchronously, so one non-blocking read right after the write may see only the first escape code."""
    chunks = []
    while select.select([master], [], [], 2.0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the slave side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _not_a_tty(monkeypatch) -> io.StringIO:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    return out


def test_quick_work_prints_nothing(monkeypatch):
    out = _not_a_tty(monkeypatch)
    with progress("scoring the pool", 10_000, "texts") as bar:
        for _ in range(10):
            bar.advance(1_000)
    assert out.getvalue() == "" and sys.stderr.getvalue() == ""


def test_plain_lines_when_not_a_tty_at_most_every_interval(monkeypatch):
    out = _not_a_tty(monkeypatch)
    clock = _Clock()
    monkeypatch.setattr(logs.time, "monotonic", clock)
    with progress("ingesting", 10_000, "items", after=2.0, every=10.0) as bar:
        for _ in range(10):
            clock.now += 3.0
            bar.advance(1_000)
    lines = out.getvalue().splitlines()
    # first line once the work lasted 2 s, then one per 10 s: at 3 s, 15 s, 27 s
    assert lines == ["... ingesting: 1,000/10,000 items (10%), 3s", "... ingesting: 5,000/10,000 items (50%), 15s",
                     "... ingesting: 9,000/10,000 items (90%), 27s"]
    assert sys.stderr.getvalue() == ""  # stderr keeps only errors


def test_rich_bar_on_a_terminal_without_colour_under_no_color(monkeypatch):
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    p = Progress("scoring the pool", 100, "texts", after=0.0)
    p.advance(40)
    p._bar.refresh()
    p.close()
    term.flush()
    term.close()
    drawn = _drain(master).decode("utf-8", "replace")
    os.close(master)
    assert "scoring the pool" in drawn and "40/100" in drawn  # the bar went to the terminal (stderr)
    assert "\x1b[3" not in drawn and "\x1b[9" not in drawn  # no foreground colour codes under NO_COLOR
    assert out.getvalue() == ""  # not on stdout


def test_chunked_transform_equals_one_transform(monkeypatch):
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK", 700)
    texts = generate_demo_corpus(n=2_000, seed=3)["text"].tolist()
    vec = fit_featurizer(texts)
    whole = vec.transform(texts)
    pieces = scoring.transform_with_progress(vec, texts, "x")
    assert pieces.shape == whole.shape and (pieces != whole).nnz == 0
    assert pieces.dtype == whole.dtype


def test_round_features_rows_equal_a_transform_of_those_texts():
    corpus = generate_demo_corpus(n=600, seed=1)
    items = pd.DataFrame({"item_id": [f"i{k:04d}" for k in range(len(corpus))], "text": corpus["text"]})
    vec = fit_featurizer(items["text"].tolist())
    pick = ["i0500", "i0003", "i0250", "i0003"]
    texts = items.set_index("item_id").loc[pick, "text"].tolist()
    for limit in (10_000, 10):  # one matrix of all items / on-demand transforms beyond the limit
        feats = RoundFeatures(vec, items, limit)
        got = feats.of(pick)
        assert (got != vec.transform(texts)).nnz == 0
        assert np.array_equal(got.toarray(), vec.transform(texts).toarray())


def test_a_warm_process_loads_the_featuriser_once_per_file(tmp_path):
    """Round after round in one process reuses the unpickled featuriser until the file changes."""
    import tomllib

    from labelloop.flows.config import example_config, parse_config
    from labelloop.flows.runtime import open_campaign

    cfg = parse_config(tomllib.loads(example_config("fz")), base_dir=tmp_path)
    texts = generate_demo_corpus(n=200, seed=2)["text"].tolist()
    first = open_campaign(cfg)
    first.save_featurizer(fit_featurizer(texts))
    a = first.featurizer()
    assert open_campaign(cfg).featurizer() is a  # another round, same file: the same object
    first.save_featurizer(fit_featurizer(texts[:100]))  # re-fitted (reopen): a new file
    b = open_campaign(cfg).featurizer()
    assert b is not a and len(b.vocabulary_) < len(a.vocabulary_)


def test_progress_inside_progress_shares_one_rich_display(monkeypatch):
    """The featuriser's embedding bar inside the pool-scoring bar: Rich allows one live display, so
    the inner one is a second line of the same display (no LiveError), and both go away after."""
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    try:
        outer = Progress("scoring the pool", 100, "texts", after=0.0)
        outer.advance(10)
        inner = Progress("embedding 50 new texts", 50, "texts", after=0.0)
        inner.advance(25)
        assert inner._bar is outer._bar and len(outer._bar.tasks) == 2
        inner.close()
        assert len(outer._bar.tasks) == 1 and logs._BAR["users"] == 1
        outer.close()
        assert logs._BAR["display"] is None
    finally:
        term.close()
        os.close(master)
