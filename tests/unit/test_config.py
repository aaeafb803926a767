from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from labelloop.flows.config import ConfigError, example_config, load_config, parse_config


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


def test_the_example_config_file_is_valid_as_shipped(tmp_path: Path):
    """flows/templates/campaign.toml is a real TOML file that validates against the schema as it is, sets
    every section of the schema, and is shipped with the package (package-data)."""
    from importlib.resources import files

    from labelloop.flows.config import EXAMPLE_CONFIG, CampaignConfig

    shipped = files("flows").joinpath("templates", "campaign.toml")
    assert shipped.is_file() and Path(str(shipped)).resolve() == EXAMPLE_CONFIG.resolve()
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    assert "{" + "name}" not in text and "{{" not in text, "no format placeholders left"
    data = tomllib.loads(text)
    cfg = parse_config(data, base_dir=tmp_path, source=str(EXAMPLE_CONFIG))
    assert cfg.name == "my-campaign" and cfg.labels.names == ["positive", "negative"]
    sections = {n for n, f in CampaignConfig.model_fields.items() if n not in ("name", "workdir", "base_dir")}
    assert sections <= set(data), f"sections the example does not show: {sorted(sections - set(data))}"
    assert '"templates/*.toml"' in (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()


def test_init_sets_values_and_keeps_every_comment(tmp_path: Path):
    from labelloop.flows.config import EXAMPLE_CONFIG

    out = example_config("tickets", ["billing", "ship \"fast\""], {"budget.max_labels": 200, "annotation.replay.path": "a.csv"})
    cfg = parse_config(tomllib.loads(out), base_dir=tmp_path)
    assert cfg.name == "tickets" and cfg.labels.names == ["billing", 'ship "fast"'], "quoted as TOML, not pasted"
    assert cfg.budget.max_labels == 200 and cfg.annotation.replay.path == "a.csv"
    comments = [ln.split("#", 1)[1] for ln in EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines() if "#" in ln]
    assert comments and all(c in out for c in comments)


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


# ----- labels and [data] keys (issue 13) ---------------------------------------------------------
AWKWARD = ["a/b", "R&D <x>", "café ☕", "../x", "a;b", "x" * 256, 'say "hi"', "a,b"]


def test_any_printable_label_up_to_the_store_limit_is_accepted(tmp_path):
    cfg = parse_config(_base(labels__names=AWKWARD), base_dir=tmp_path)
    assert cfg.labels.names == AWKWARD  # kept exactly, not normalised


@pytest.mark.parametrize("names, needle", [
    (["a", "x" * 257], "257 characters long; at most 256"),
    (["a", "b\nc"], "U+000A"),
    (["a", "b\x00"], "U+0000"),
    (["a", "b\u2028"], "U+2028"),
    (["a", " b"], "leading or trailing whitespace"),
    (["a", "cafe\u0301"], "not in Unicode NFC form"),
    (["Pos", "pos"], "only in case"),
])
def test_labels_no_store_keeps_exactly_are_refused_at_config_time(tmp_path, names, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(_base(labels__names=names), base_dir=tmp_path, source="c.toml")
    assert "labels.names" in str(e.value) and needle in str(e.value), str(e.value)


def test_label_limit_matches_the_ledger_columns():
    from labelloop.flows.config import LABEL_MAX_CHARS
    from labelloop.integrations.ledger.schema import annotations, items

    assert items.c.known_label.type.length == annotations.c.label.type.length == LABEL_MAX_CHARS


def test_data_encoding_and_delimiter_keys(tmp_path):
    cfg = parse_config(_base(data__encoding="utf-16", data__delimiter="tab"), base_dir=tmp_path)
    assert cfg.data.encoding == "utf-16" and cfg.data.delimiter == "\t"
    assert parse_config(_base(data__delimiter=";"), base_dir=tmp_path).data.delimiter == ";"
    for key, value, needle in [("encoding", "utf-9", "unknown encoding 'utf-9'"),
                               ("delimiter", "::", "unsupported delimiter '::'")]:
        with pytest.raises(ConfigError) as e:
            parse_config(_base(**{f"data__{key}": value}), base_dir=tmp_path, source="c.toml")
        assert f"data.{key}" in str(e.value) and needle in str(e.value)


def test_config_delimiters_are_the_ones_the_reader_sniffs():
    from labelloop.flows.config import DELIMITERS
    from labelloop.integrations import sources

    assert set(DELIMITERS) == set(sources.DELIMITERS)


def test_a_symlink_loop_as_data_path_is_not_a_traceback(tmp_path):
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    cfg = parse_config(_base(data__path="a.csv"), base_dir=tmp_path)
    assert cfg.data_path == tmp_path.resolve() / "a.csv" or cfg.data_path.name == "a.csv"


def test_safe_metric_names_are_stable_distinct_and_accepted_by_mlflow():
    from mlflow.utils.validation import _validate_metric_name

    from labelloop.integrations.tracking import safe_metric_name

    assert safe_metric_name("test_recall_billing") == "test_recall_billing"  # plain names are unchanged
    assert safe_metric_name("test_recall_no answer") == "test_recall_no answer"
    names = [f"test_recall_{lab}" for lab in [*AWKWARD, "a_b", "a-b", "../../etc", "☕", "Ω" * 300]]
    safe = [safe_metric_name(n) for n in names]
    assert len(set(safe)) == len(safe), "two labels never share a metric"
    assert safe == [safe_metric_name(n) for n in names], "stable across calls (and processes: a hash, no state)"
    for s in safe:
        _validate_metric_name(s)  # raises on a name MLflow refuses
        assert len(s) <= 250 and ".." not in s
    import re

    assert re.fullmatch(r"test_recall_+x-[0-9a-f]{8}", safe_metric_name("test_recall_../x"))
