"""Prompt caching against a real llama.cpp server: it reports the prompt tokens its slots reused
as `usage.prompt_tokens_details.cached_tokens` (as OpenAI does; `timings.cache_n` says the same),
and a run prices them at --price-cached-in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from realcli import run_cli

PACKAGE = Path(__file__).resolve().parents[2] / "parallelize"
#: Real source files of a few hundred to a few thousand tokens: one chunk each, four chunks for
#: the four slots, so the second run finds each prompt in a slot.
SOURCES = ("engine/retry.py", "engine/durations.py", "engine/overflows.py", "render/lines.py")
PRICES = ("--price-in", "1", "--price-out", "2", "--price-cached-in", "0.1")


def test_cached_prompt_tokens_are_read_and_priced(server_4k, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    for name in SOURCES:
        shutil.copy(PACKAGE / name, tmp_path / "src" / name.replace("/", "_"))
    # summarize answers free text: a 16-token answer is kept (code-review's JSON would be repaired)
    args = ["section", "src", "--recipe", "summarize", "--by", "file", "-j", "1"]
    args += ["-m", "tiny-llama", "--max-tokens", "16", "--no-cache", "--format", "json", *PRICES]
    runs = [run_cli(server_4k.base_url, tmp_path, *args) for _ in range(2)]
    for ran in runs:
        assert ran.returncode == 0 and ran.stdout, ran.stderr  # a truncated answer is exit 0
    first, again = (json.loads(ran.stdout) for ran in runs)
    for doc in (first, again):
        tasks = [t["usage"] for t in doc["tasks"]]
        assert len(tasks) == len(SOURCES)
        assert all(0 <= t["cached_tokens"] <= t["prompt_tokens"] for t in tasks)
        usage, cost = doc["usage"], doc["cost"]
        assert usage["cached_tokens"] == sum(t["cached_tokens"] for t in tasks)
        cached = usage["cached_tokens"]
        billed = (usage["prompt_tokens"] - cached) + 0.1 * cached + 2 * usage["completion_tokens"]
        assert abs(cost["usd"] - billed / 1e6) < 1e-5
        assert abs(cost["prompt_cache_saved_usd"] - 0.9 * cached / 1e6) < 1e-5
    # The same requests again: the server's slots still hold their prompts.
    assert again["usage"]["cached_tokens"] > again["usage"]["prompt_tokens"] // 2
    assert "prompt cache saved $" in runs[1].stderr
