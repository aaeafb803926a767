from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flows.config import ConfigError, example_config, load_config, parse_config


def _base(**over):
    d = tomllib.loads(example_config("c1", ["a", "b", "c"]))
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return d


def test_example_config_is_valid_and_resolves_paths(tmp_path: Path):
    p = tmp_path / "c.toml"
    p.write_text(example_config("c1", ["a", "b"]))
    cfg = load_config(p)
    assert cfg.name == "c1" and cfg.labels.names == ["a", "b"]
    assert cfg.data_path == (tmp_path / "pool.csv").resolve()
    assert cfg.ledger_url == f"sqlite:///{tmp_path.resolve() / 'ledger.db'}"
    assert cfg.arms == ["active", "random"]


def test_unknown_key_is_named(tmp_path):
    d = _base(query__batchsize=10)
    with pytest.raises(ConfigError) as e:
        parse_config(d, base_dir=tmp_path, source="c.toml")
    assert "query.batchsize" in str(e.value) and "unknown key" in str(e.value)


@pytest.mark.parametrize("over, needle", [
    ({"query__random_share": 1.5}, "query.random_share"),
    ({"query__batch_size": 1000}, "batch_size (1000) is larger than budget.max_labels"),
    ({"query__strategy": "magic"}, "unknown strategy 'magic'"),
    ({"labels__names": ["a", "a"]}, "duplicate label names"),
    ({"labels__names": ["a", " "]}, "non-empty"),
    ({"annotation__overlap": 0}, "annotation.overlap"),
    ({"splits__seed_method": "keywords"}, "needs [splits.keywords]"),
    ({"splits__seed_method": "keywords", "splits__keywords": {"a": ["x"], "zebra": ["y"]}},
     "labels that are not in labels.names: ['zebra']"),
    ({"splits__seed_method": "keywords", "splits__keywords": {"a": [" "]}}, "no keywords for: ['a']"),
])
def test_impossible_values_are_refused(tmp_path, over, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(_base(**over), base_dir=tmp_path, source="c.toml")
    assert needle in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    p = tmp_path / "bad.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_ledger_url_from_environment(tmp_path, monkeypatch):
    d = _base(ledger__url_env="LL_URL")
    cfg = parse_config(d, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="LL_URL"):
        _ = cfg.ledger_url
    monkeypatch.setenv("LL_URL", "sqlite:////tmp/x.db")
    assert cfg.ledger_url == "sqlite:////tmp/x.db"


def test_keyword_seed_rules_parse(tmp_path):
    cfg = parse_config(_base(splits__seed_method="keywords", splits__keywords={"a": ["refund"], "c": ["crash"]}),
                       base_dir=tmp_path, source="c.toml")
    assert cfg.splits.seed_method == "keywords" and cfg.splits.keywords == {"a": ["refund"], "c": ["crash"]}
