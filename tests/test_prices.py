"""Prices: the recipe's `prices` schema, the built-in table, --price-cached-in, and what a run's
cached prompt tokens cost and save (read from the reply, kept in the call cache)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize import RunOptions
from parallelize.cli.app import app
from parallelize.engine.cache import CACHE_FILE, SCHEMA_VERSION, CallCache
from parallelize.engine.costs import PRICES, Ledger, Price, PriceBook, builtin_price
from parallelize.engine.reply import CACHED_IGNORED, parse_usage
from parallelize.errors import ConfigError, RecipeError
from parallelize.recipe.load import parse_recipe
from parallelize.records import Completion, Usage

PROMPT = "prompt: 'x {{ input }}'\n"
#: A system prompt long enough that the chunks share most of each request.
SYSTEM = "You review text with care. " * 40
FLAGS = ["--price-in", "1", "--price-out", "2", "--price-cached-in", "0.25"]


def recipe_prices(spec: str):
    return parse_recipe(f"{PROMPT}prices:\n  m: {spec}\n", source="r.yaml").prices["m"]


# ---- the schema -------------------------------------------------------------------------------


def test_a_recipe_price_carries_every_rate_and_a_missing_one_is_the_list_rate() -> None:
    spec = "{input: 2, output: 8, cached_input: 0.5, batch_input: 1, batch_output: 4}"
    full = RunOptions().for_recipe(parse_recipe(f"{PROMPT}prices:\n  m: {spec}\n")).price_book()
    assert full.price("m") == Price(2, 8, cached_input=0.5, batch_input=1, batch_output=4)
    assert full.price("m").cost(1_000_000, 0, cached=1_000_000) == pytest.approx(0.5)
    bare = RunOptions().for_recipe(parse_recipe(f"{PROMPT}prices:\n  m: {{input: 2, output: 8}}\n"))
    price = bare.price_book().price("m")
    assert price is not None and price.cached_rate == 2  # no discount claimed
    assert price.cost(1_000_000, 0, cached=1_000_000) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{input: 1, output: 2, cached_input: -1}", r"prices\.m\.cached_input: .*greater than"),
        ("{input: 1, output: 2, cached_input: .inf}", r"prices\.m\.cached_input: .*finite"),
        ("{input: 1, output: 2, batch_output: .nan}", r"prices\.m\.batch_output: .*finite"),
        ("{input: 1, output: 2, cache_input: 0.5}", r"unknown key 'prices\.m\.cache_input'"),
        ("{input: 1, output: 2, cached_input: 3}", r"prices\.m: cached_input 3 is above input 1"),
        ("{input: 1, output: 2, batch_input: 1.5}", r"batch_input 1\.5 is above input 1"),
        ("{input: 1, output: 2, batch_output: 3}", r"batch_output 3 is above output 2"),
    ],
)
def test_a_bad_rate_is_a_recipe_error_naming_its_key(spec: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        recipe_prices(spec)


def test_a_bad_rate_in_a_recipe_file_is_exit_2_before_any_request(
    llm: LLMServer, tmp_path: Path
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"{PROMPT}prices:\n  test-model: {{input: 1, output: 2, cached_input: -1}}\n")
    result = CliRunner().invoke(app, ["section", "-", "--recipe", str(path), "-m", "test-model"])
    assert result.exit_code == 2 and "prices.test-model.cached_input" in result.stderr
    assert "Traceback" not in result.stderr and llm.all_requests == []


# ---- the built-in table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "cached"),
    [("gpt-4o", 1.25), ("gpt-4o-mini", 0.075), ("gpt-4.1", 0.50), ("gpt-5", 0.125)],
)
def test_the_table_lists_openai_cached_rates_and_half_price_batches(
    model: str, cached: float
) -> None:
    price = builtin_price(f"{model}-2025-01-01")  # a dated variant has its model's price
    assert price is not None and price.cached_input == cached
    assert (price.batch_input, price.batch_output) == (price.input / 2, price.output / 2)


def test_every_listed_rate_is_a_discount_and_models_before_gpt_4o_claim_no_cached_rate() -> None:
    for price in PRICES.values():
        assert price.cached_rate <= price.input
        assert price.batch_input is not None and price.batch_output is not None
    for old in ("gpt-4", "gpt-4-turbo", "gpt-3.5-turbo"):
        assert PRICES[old].cached_input is None and PRICES[old].cached_rate == PRICES[old].input


# ---- flags over the recipe and the table ------------------------------------------------------


def test_price_flags_replace_rates_and_drop_the_discounts_of_a_replaced_list_rate() -> None:
    table = PriceBook().price("gpt-4o")
    assert table is not None and table.cached_input == 1.25
    price_in = PriceBook(price_in=3.0).price("gpt-4o")
    assert price_in is not None and price_in.cached_rate == 3.0 and price_in.batch_input is None
    assert price_in.batch_output == 5.0  # the output rate is the table's: its batch rate too
    cached = PriceBook(price_in=3.0, price_cached_in=0.3).price("gpt-4o")
    assert cached is not None and cached.cached_rate == 0.3
    only_cached = PriceBook(price_cached_in=0.5).price("gpt-4o")
    assert only_cached is not None and (only_cached.input, only_cached.cached_rate) == (2.5, 0.5)
    assert PriceBook(price_cached_in=0.5).price("local-model") is None  # no input price known
    local = PriceBook(price_in=1.0, price_out=2.0, price_cached_in=0.1).price("local-model")
    assert local == Price(1.0, 2.0, cached_input=0.1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--price-in", "1", "--price-cached-in", "2"],
            "--price-cached-in 2 is above --price-in 1",
        ),
        (["--price-cached-in", "-1"], "--price-cached-in"),
        (["--price-cached-in", "nan"], "--price-cached-in"),
        (["--price-cached-in", "inf"], "--price-cached-in: inf is not a finite number"),
    ],
)
def test_a_bad_price_cached_in_is_exit_2_naming_the_flag(
    llm: LLMServer, make_tree, flags: list[str], message: str
) -> None:
    root = make_tree({"a.txt": "A\n"})
    result = CliRunner().invoke(app, ["section", str(root), "-p", "x", "-m", "test-model", *flags])
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and llm.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ["section", "SRC", "-p", "x"],
        ["section", "SRC", "-p", "x", "--dry-run"],
        ["vote", "Name a colour", "-n", "2"],
        ["section", "SRC", "-p", "x", "--max-cost", "1"],
    ],
    ids=["section", "dry-run", "vote", "budget"],
)
def test_price_cached_in_above_a_models_table_input_price_is_exit_2_before_any_request(
    llm: LLMServer, make_tree, args: list[str]
) -> None:
    root = str(make_tree({"a.txt": "A\n"}))
    args = [root if a == "SRC" else a for a in args]
    result = CliRunner().invoke(app, [*args, "-m", "gpt-4o-mini", "--price-cached-in", "5"])
    assert result.exit_code == 2, result.stderr
    assert "error: --price-cached-in 5 is above the input price of gpt-4o-mini (0.15 USD per " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and llm.requests == []
    with pytest.raises(ConfigError, match="above the input price of gpt-4o"):
        PriceBook(price_cached_in=5).price("gpt-4o")
    assert PriceBook(price_cached_in=1).price("gpt-4o").cache_saving(1_000_000) == 1.5


@pytest.mark.parametrize("command", ["section", "vote"])
def test_every_command_that_calls_a_model_has_the_flag(command: str) -> None:
    assert "--price-cached-in" in CliRunner().invoke(app, [command, "--help"]).stdout


# ---- what a call costs ------------------------------------------------------------------------


def test_the_ledger_charges_cached_tokens_at_the_cached_rate_and_counts_the_saving() -> None:
    ledger = Ledger(PriceBook(price_in=1.0, price_out=2.0, price_cached_in=0.25))
    ledger.settle(0.0, "m", Usage(1_000_000, 1_000_000, cached_tokens=600_000))
    assert ledger.spent == pytest.approx(0.4 + 0.15 + 2.0)
    ledger.save("m", Usage(1_000_000, 0, cached_tokens=1_000_000))  # a call-cache hit
    report = ledger.report()
    assert report.usd == pytest.approx(2.55) and report.saved_usd == pytest.approx(0.25)
    assert report.prompt_cache_saved_usd == pytest.approx(0.45)  # only calls made count
    unpriced = Ledger(PriceBook())
    unpriced.settle(0.0, "local", Usage(10, 1, cached_tokens=5))
    assert unpriced.report().prompt_cache_saved_usd is None


def test_a_dry_run_estimate_assumes_no_prompt_cache_hit(llm: LLMServer, make_tree) -> None:
    root = make_tree({"a.txt": "A\n" * 50})
    args = ["section", str(root), "-p", "x", "-m", "test-model", "--dry-run", "--format", "json"]
    with_rate = CliRunner().invoke(app, [*args, *FLAGS])
    without = CliRunner().invoke(app, [*args, "--price-in", "1", "--price-out", "2"])
    assert with_rate.exit_code == 0, with_rate.stderr
    estimate = json.loads(with_rate.stdout)["estimate"]
    assert estimate["cost"] > 0 and estimate == json.loads(without.stdout)["estimate"]


# ---- the reply's cached tokens ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "cached", "warned"),
    [
        (None, 0, False),
        ({"cached_tokens": 40}, 40, False),
        ({"cached_tokens": 100}, 100, False),
        ({"audio_tokens": 0}, 0, False),
        ({"cached_tokens": None}, 0, False),
        ({"cached_tokens": 101}, 0, True),
        ({"cached_tokens": -1}, 0, True),
        ({"cached_tokens": "40"}, 0, True),
        ({"cached_tokens": True}, 0, True),
        ({"cached_tokens": 4.5}, 0, True),
        ({"cached_tokens": 10**30}, 0, True),
        ("40", 0, True),
        ([40], 0, True),
    ],
)
def test_cached_tokens_are_believed_only_as_a_count_within_the_prompt(
    details: object, cached: int, warned: bool
) -> None:
    raw: dict[str, object] = {"prompt_tokens": 100, "completion_tokens": 7}
    if details is not None:
        raw["prompt_tokens_details"] = details
    usage, warnings = parse_usage(raw)
    assert usage == Usage(100, 7, cached)
    assert (CACHED_IGNORED in warnings) is warned


def test_an_untrusted_cached_count_fails_nothing_and_is_told_once(
    llm: LLMServer, make_tree
) -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 11},
        },
    }
    llm.script(None, raw=json.dumps(body))
    root = make_tree({f"{i}.txt": f"T{i}\n" for i in range(3)})
    args = ["section", str(root), "--by", "file", "-p", "x", "-m", "test-model", "--format", "json"]
    result = CliRunner().invoke(app, [*args, *FLAGS])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["usage"]["cached_tokens"] == 0 and doc["cost"]["prompt_cache_saved_usd"] == 0
    assert result.stderr.count("cached_tokens is not a count within prompt_tokens") == 1


# ---- a run over the loopback server's prompt cache --------------------------------------------


def run_cached(make_tree, *extra: str):
    root = make_tree({f"{i}.txt": f"DATA-{i}\n" for i in range(3)})
    args = ["section", str(root), "--by", "file", "-j", "1", "--system", SYSTEM, "-p", "Check:"]
    return CliRunner().invoke(app, [*args, "-m", "test-model", *FLAGS, *extra])


def test_a_run_reports_cached_tokens_their_cost_and_the_saving(llm: LLMServer, make_tree) -> None:
    llm.prompt_cache = True
    result = run_cached(make_tree, "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    tasks = [t["usage"] for t in doc["tasks"]]
    assert tasks[0]["cached_tokens"] == 0  # the first request has nothing to share with
    assert all(0 < t["cached_tokens"] <= t["prompt_tokens"] for t in tasks[1:])
    cached = sum(t["cached_tokens"] for t in tasks)
    assert doc["usage"]["cached_tokens"] == cached
    prompt = doc["usage"]["prompt_tokens"]
    out = doc["usage"]["completion_tokens"]
    usd = ((prompt - cached) * 1 + cached * 0.25 + out * 2) / 1e6
    assert doc["cost"]["usd"] == pytest.approx(usd, abs=1e-6)
    assert doc["cost"]["prompt_cache_saved_usd"] == pytest.approx(cached * 0.75 / 1e6, abs=1e-6)
    assert doc["cost"]["saved_usd"] == 0  # the call cache saved nothing: every call was made


def test_the_summary_names_the_prompt_cache_saving_only_when_there_is_one(
    llm: LLMServer, make_tree
) -> None:
    llm.prompt_cache = True
    assert "prompt cache saved $0.0" in run_cached(make_tree).stderr
    llm.prompt_cache = False
    assert "prompt cache" not in run_cached(make_tree, "--no-cache").stderr


# ---- the call cache keeps cached tokens -------------------------------------------------------


def test_cached_tokens_round_trip_through_the_call_cache(llm: LLMServer, make_tree) -> None:
    llm.prompt_cache = True
    first = run_cached(make_tree, "--format", "json")
    again = run_cached(make_tree, "--format", "json")
    assert first.exit_code == again.exit_code == 0, again.stderr
    made, kept = json.loads(first.stdout), json.loads(again.stdout)
    assert [t["usage"] for t in kept["tasks"]] == [t["usage"] for t in made["tasks"]]
    assert all(t["cached"] for t in kept["tasks"]) and made["usage"]["cached_tokens"] > 0
    assert kept["cost"]["saved_usd"] == pytest.approx(made["cost"]["usd"], abs=1e-6)
    assert kept["usage"]["cached_tokens"] == 0 and kept["cost"]["prompt_cache_saved_usd"] == 0


def version_1_cache(path: Path) -> None:
    """A cache file as parallelize wrote it at schema version 1 (one call in it)."""
    db = sqlite3.connect(path / CACHE_FILE)
    db.executescript(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL,"
        " finish_reason TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " tool_calls TEXT, truncated INTEGER NOT NULL, created REAL NOT NULL, used REAL NOT NULL);"
        "CREATE INDEX calls_used ON calls (used);"
        "CREATE TABLE facts (endpoint TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,"
        " value TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (endpoint, model, kind));"
        "CREATE TABLE token_counts (tokenizer TEXT NOT NULL, text TEXT NOT NULL,"
        " tokens INTEGER NOT NULL, used REAL NOT NULL, PRIMARY KEY (tokenizer, text))"
        " WITHOUT ROWID;"
        "INSERT INTO calls VALUES ('k1', 'm', 'kept answer', 'stop', 3, 4, NULL, 0, 1.0, 1.0);"
        "PRAGMA user_version = 1;"
    )
    db.close()


def test_a_version_1_cache_is_migrated_and_its_calls_load_with_no_cached_tokens(
    tmp_path: Path,
) -> None:
    version_1_cache(tmp_path)
    with CallCache(tmp_path) as cache:
        assert not cache.read_only
        assert cache.get_many(["k1"])["k1"].usage == Usage(3, 4, 0)
        cache.put("k2", Completion("new", "stop", Usage(30, 4, cached_tokens=20), "m"))
    db = sqlite3.connect(tmp_path / CACHE_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    db.close()
    with CallCache(tmp_path) as cache:
        found = cache.get_many(["k1", "k2"])
        assert found["k2"].usage == Usage(30, 4, 20) and found["k1"].text == "kept answer"
