"""Sections over messy trees, end to end: secrets never leave, windows are respected, CLI flags."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from llmserver import LLMServer, prompt_tokens
from typer.testing import CliRunner

from parallelize import RunOptions, find_recipe, run_section
from parallelize.cli.app import app
from parallelize.errors import InputError
from parallelize.inputs.read import Discovery, inputs_summary
from parallelize.inputs.tokens import BYTES_BOUND, ESTIMATE, get_counter
from parallelize.plan.sections import prepare_section
from parallelize.recipe.load import override

B64 = "q7Wv3zX9yT2uR8sP1oN4mL6kJ0hG5fD"
PEM_BODY = "MIIEowIBAAKCAQEA" + B64 * 8
#: One planted secret per rule: (file, line to plant, the value that must never be sent).
PLANTED = {
    "private-key": (
        "certs/notes.txt",
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----",
        PEM_BODY,
    ),
    "aws-access-key-id": ("src/aws.py", 'KEY_ID = "AKIAQWERTYUIOPASDFGH"', "AKIAQWERTYUIOPASDFGH"),
    "aws-secret-access-key": (
        "deploy/aws.cfg",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYq7Wv3zX9yT",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYq7Wv3zX9yT",
    ),
    "github-token": ("src/gh.py", f'TOKEN = "ghp_{B64}12345"', f"ghp_{B64}12345"),
    "github-fine-grained-token": (
        "src/ghf.py",
        f"t = 'github_pat_{'A' * 22}_{B64}{'b' * 28}'",
        f"github_pat_{'A' * 22}_{B64}{'b' * 28}",
    ),
    "gitlab-token": (
        "ci/gitlab.sh",
        "export T=glpat-Xy9zQ8wR7vT6uS5pO4nM",
        "glpat-Xy9zQ8wR7vT6uS5pO4nM",
    ),
    "slack-token": (
        "src/slack.js",
        f"const t = 'xoxb-123456789012-1234567890123-{B64[:24]}';",
        f"xoxb-123456789012-1234567890123-{B64[:24]}",
    ),
    "slack-webhook": (
        "docs/hook.md",
        f"POST https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{B64[:24]}",
        f"T0123ABCD/B0456EFGH/{B64[:24]}",
    ),
    "openai-api-key": ("src/ai.py", f"key = 'sk-proj-{B64}{B64}'", f"sk-proj-{B64}{B64}"),
    "google-api-key": ("web/maps.html", f"<script src='?key=AIza{B64}1234'>", f"AIza{B64}1234"),
    "stripe-key": ("src/pay.rb", f'Stripe.api_key = "sk_live_{B64[:26]}"', f"sk_live_{B64[:26]}"),
    "huggingface-token": ("src/hf.py", f"HF = 'hf_{B64}abc'", f"hf_{B64}abc"),
    "npm-token": ("ci/publish.sh", f"NPM_TOKEN=npm_{B64}abcde", f"npm_{B64}abcde"),
    "pypi-token": (
        "ci/pypi.sh",
        f"TWINE=pypi-AgEIcHlwaS5vcmc{B64 * 2}",
        f"pypi-AgEIcHlwaS5vcmc{B64 * 2}",
    ),
    "url-password": (
        "docs/db.md",
        "DATABASE_URL=postgres://app:Sup3rS3cret!@db:5432/x",
        "Sup3rS3cret!",
    ),
    "password-assignment": (
        "config/app.yaml",
        'database:\n  password: "Tr0ub4dor&3-horse"',
        "Tr0ub4dor&3-horse",
    ),
}


def planted_tree(make_tree) -> Path:
    files: dict[str, str] = {}
    for path, line, _ in PLANTED.values():
        files[path] = files.get(path, "# a file\n") + f"{line}\nprint('after')\n"
    files["README.md"] = "nothing secret here\n"
    return make_tree(files)


def recipe(**values: object):
    return override(find_recipe("summarize"), {"model": "test-model", **values})


def sent(llm: LLMServer) -> str:
    return "\n".join(json.dumps(r.body) for r in llm.all_requests if r.body)


def test_planted_secrets_never_reach_the_server(llm: LLMServer, make_tree) -> None:
    root = planted_tree(make_tree)
    result = run_section([str(root)], recipe(chunking={"by": "file"}))
    assert (
        result.exit_code == 0 and len(llm.requests) == len({p for p, _, _ in PLANTED.values()}) + 1
    )
    body = sent(llm)
    for rule, (_, _, value) in PLANTED.items():
        assert value not in body, rule
        assert f"[REDACTED:{rule}]" in body, rule
    assert "print('after')" in body  # the rest of each file is sent
    warned = [w for w in result.warnings if w.startswith("secret redacted: ")]
    assert len(warned) == 10 and "more secret(s) redacted" in result.warnings[-1]
    found = result.details["inputs"]["secrets"]
    assert {f["rule"] for f in found} == set(PLANTED)
    assert all(value not in json.dumps(result.details) for _, _, value in PLANTED.values())


def test_allow_secrets_sends_them_and_fail_sends_nothing(llm: LLMServer, make_tree) -> None:
    root = planted_tree(make_tree)
    with pytest.raises(InputError, match=r"found \d+ secret\(s\), nothing was sent: .*:2:"):
        run_section([str(root)], recipe(inputs={"on_secret": "fail"}))
    assert llm.all_requests == []
    run_section([str(root)], recipe(inputs={"on_secret": "allow"}, chunking={"chunks": 1}))
    assert "AKIAQWERTYUIOPASDFGH" in sent(llm)  # the check above can fail


def test_dry_run_shows_masked_findings_and_the_redacted_prompt(llm, make_tree) -> None:
    root = planted_tree(make_tree)
    result = CliRunner().invoke(app, ["section", str(root), "--chunks", "1", "--dry-run"])
    assert result.exit_code == 0 and llm.requests == []  # no model call
    out = result.stdout
    assert "secrets redacted before sending (values masked):" in out
    assert f"{root}/src/aws.py:2:aws-access-key-id (AWS access key id, 20 chars)" in out
    assert "--- rendered prompt of chunk 1/1 ---" in out and "[REDACTED:github-token]" in out
    for _, _, value in PLANTED.values():
        assert value not in out and value not in result.stderr


def test_a_chunk_too_big_for_the_window_fails_before_any_request(llm, make_tree) -> None:
    root = make_tree({"big.py": "x = 1\n" * 2000, "small.py": "y = 2\n"})
    args = ["section", str(root), "--chunks", "1", "--context-window", "2000", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and llm.requests == []  # the endpoint may count: asked, no chat
    assert f"chunk 1/1 ({root}/big.py, {root}/small.py) needs about" in result.stderr


def test_server_context_overflow_heals_naming_the_chunk_and_its_files(llm, make_tree) -> None:
    llm.context_window = 400  # the server's own limit; the model's table entry says more
    root = make_tree({"a.py": "a = 1\n", "big.py": "value = compute(1, 2, 3)\n" * 200})
    args = [
        "section",
        str(root),
        "--by",
        "file",
        "-j",
        "1",
        "-m",
        "test-model",
        "--max-retries",
        "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr  # sent in parts instead (tests/test_healing.py)
    assert f"chunk 2/2 ({root}/big.py) was longer than the server's context window" in result.stderr
    refused = [r for r in llm.requests if r.status == 400]
    assert len(refused) == 1 and "value = compute" in refused[0].prompt  # not retried as is


def test_context_window_and_tokens_from_a_llama_server(llm: LLMServer, make_tree) -> None:
    llm.llama = True
    llm.context_window = 700
    root = make_tree({f"m{i}.py": f"def f{i}(x):\n    return x + {i}\n\n" * 30 for i in range(4)})
    result = run_section([str(root)], recipe(max_tokens=64, tokenizer="server"))
    assert result.exit_code == 0 and len(llm.requests) >= 2
    assert {r.status for r in llm.requests} == {200}
    assert all(prompt_tokens(r.body) <= 700 for r in llm.requests)
    assert result.details["counter"] == "server"
    assert result.details["context_window"] == 700
    assert "/props" in result.details["context_window_source"]


def test_files_from_stdin_with_missing_entries(llm: LLMServer, make_tree, monkeypatch) -> None:
    root = make_tree({"a.py": "A_FILE\n", "b.py": "B_FILE\n", "sub/c.py": "C_FILE\n"})
    monkeypatch.chdir(root)
    listed = b"a.py\0deleted.py\0sub\0"
    args = ["section", "--files-from", "-", "--chunks", "1", "-v"]
    result = CliRunner().invoke(app, args, input=listed)
    assert result.exit_code == 0, result.stderr
    prompt = llm.requests[0].last_user
    assert "A_FILE" in prompt and "C_FILE" in prompt and "B_FILE" not in prompt
    assert "skipped (missing): deleted.py" in result.stderr
    assert "inputs: 2 files" in result.stderr and "1 missing" in result.stderr


def test_files_from_a_file_plus_content_on_stdin(llm, make_tree, tmp_path, monkeypatch) -> None:
    root = make_tree({"a.py": "A_FILE\n"})
    monkeypatch.chdir(tmp_path)  # an absolute entry inside the working directory is fine
    listing = tmp_path / "changed.txt"
    listing.write_text(f"{root}/a.py\n")
    args = ["section", "-", "--files-from", str(listing), "--chunks", "1", "-q"]
    result = CliRunner().invoke(app, args, input="PIPED_TEXT\n")
    assert result.exit_code == 0
    prompt = llm.requests[0].last_user
    assert prompt.index("PIPED_TEXT") < prompt.index("A_FILE")
    result = CliRunner().invoke(app, ["section", "-", "--files-from", "-"])
    assert result.exit_code == 2 and "both want stdin" in result.stderr


def test_recipe_inputs_and_flags_filter_files(llm: LLMServer, make_tree, tmp_path) -> None:
    root = make_tree({"src/a.py": "A\n", "src/b.md": "B\n", "tests/t.py": "T\n", "v/x.py": "X\n"})
    own = tmp_path / "mine.yaml"
    own.write_text("prompt: '{{ input }}'\ninputs:\n  exclude: ['tests/']\n  max_file_bytes: 100\n")
    args = ["section", str(root), "-r", str(own), "--include", "*.py", "--exclude", "v/"]
    result = CliRunner().invoke(app, [*args, "--chunks", "1", "--format", "json", "-q"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tasks"][0]["paths"] == [f"{root}/src/a.py"]
    assert doc["inputs"]["files"] == 1 and doc["counter"]
    assert sorted(doc["inputs"]["skipped"]["excluded"]) == [
        f"{root}/src/b.md",
        f"{root}/tests/",
        f"{root}/v/",
    ]


def test_verbose_lists_skips_and_secrets_only_by_kind(llm, make_tree) -> None:
    root = make_tree({"a.py": "x = 1\n", ".env": "A=1\n", "c.cfg": "token = s3cr3t-v4lue-xyz\n"})
    (root / "blob.bin").write_bytes(b"\0\1\2")
    result = CliRunner().invoke(app, ["section", str(root), "--chunks", "1", "-v"])
    assert result.exit_code == 0
    err = result.stderr
    assert f"skipped (binary): {root}/blob.bin" in err
    assert f"skipped (secret-file): {root}/.env" in err
    assert f"secret redacted: {root}/c.cfg:1:password-assignment" in err
    assert "s3cr3t-v4lue-xyz" not in err + result.stdout and "s3cr3t" not in sent(llm)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_offline_without_encodings_falls_back_once(entry_point, make_tree, tmp_path) -> None:
    root = make_tree({"a.py": "print('hello')\n" * 20})
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "no-cache"),
        "HTTPS_PROXY": f"http://127.0.0.1:{closed_port()}",
        "OPENAI_API_KEY": "sk-test",
    }
    run = subprocess.run(
        [entry_point, "section", str(root), "--dry-run", "-m", "gpt-4o"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "tokens counted with estimate" in run.stdout
    assert run.stderr.count("token counts are estimates") == 1


INPUT_FLAGS = [
    "--include",
    "--exclude",
    "--files-from",
    "--allow-outside",
    "--max-file-bytes",
    "--on-secret",
    "--allow-secrets",
    "--tokenizer",
    "--context-window",
    "--overlap",
    "--verbose",
]


def test_flags_and_recipe_keys_are_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    help_text = CliRunner().invoke(app, ["section", "--help"], env={"COLUMNS": "200"}).stdout
    for flag in INPUT_FLAGS:
        assert flag in help_text and f"`{flag}" in readme, flag
    table = readme.split("| key | meaning |", 1)[1].split("\n\n", 1)[0]
    for key in ("tokenizer", "inputs", "context_window", "chunking", "overlap"):
        assert f"`{key}`" in table, key
    for key in ("include", "exclude", "max_file_bytes", "on_secret"):
        assert f"`{key}`" in table, key


def test_a_larger_window_from_the_server_is_asked_before_judging_the_fit(llm, make_tree) -> None:
    llm.llama = True
    llm.context_window = 20_000  # the table knows nothing of test-model: 8,192
    root = make_tree({"big.py": "value = compute(1, 2, 3)\n" * 1000})  # about 9,000 tokens
    result = run_section([str(root)], recipe(chunking={"chunks": 1}, max_tokens=64))
    assert result.exit_code == 0 and result.details["context_window"] == 20_000
    llm.llama = False  # the window is remembered for a day: --refresh asks again
    with pytest.raises(InputError, match="needs about"):
        run_section(
            [str(root)],
            recipe(chunking={"chunks": 1}, max_tokens=64),
            options=RunOptions(refresh=True),
        )
    assert len(llm.requests) == 1  # the first run's one chunk; the second sent nothing


SMALL_FILES = {
    "a.py": "def héllo():\n    return 'wörld ✓'\n",
    "b.md": "# Notes\n\nSome words, and more words.\n",
    "c.txt": "日本語のテキスト\n" * 3,
}


def test_by_file_proves_small_files_fit_on_bytes_and_reports_the_tokenizer_counts(
    llm: LLMServer, make_tree
) -> None:
    root = make_tree(SMALL_FILES)
    by_file = recipe(chunking={"by": "file"}, max_tokens=64)
    prepared = prepare_section([str(root)], by_file, model="test-model", count_first=False)
    assert prepared.counter is BYTES_BOUND  # no tokenizer loaded before the first request
    assert [c.paths for c in prepared.plan.chunks] == [[f"{root}/{n}"] for n in SMALL_FILES]

    result = run_section([str(root)], by_file)
    dry = run_section([str(root)], by_file, options=RunOptions(dry_run=True))

    count = get_counter("test-model").count
    exact = [count(text) for text in SMALL_FILES.values()]
    assert result.exit_code == 0 and len(llm.requests) == len(SMALL_FILES)
    assert result.details["counter"] == dry.details["counter"] == "cl100k_base"
    assert result.details["inputs"]["tokens"] == dry.details["inputs"]["tokens"] == sum(exact)
    assert [t.source.tokens for t in result.tasks] == exact
    assert [t.source.tokens for t in dry.tasks] == exact
    assert result.details["inputs"]["summary"] == dry.details["inputs"]["summary"]


def test_a_file_over_the_byte_bound_is_counted_by_the_tokenizer(llm, make_tree) -> None:
    text = "value = compute(1, 2, 3)\n" * 700  # 17,500 bytes, about 8,000 tokens
    root = make_tree({"big.py": text})
    by_file = recipe(chunking={"by": "file"}, max_tokens=64, context_window=100_000)
    prepared = prepare_section([str(root)], by_file, model="test-model", count_first=False)
    assert prepared.counter.name == "cl100k_base"
    assert len(prepared.plan.chunks) == 1  # whole: 8,000 tokens fit the 12,000 budget

    result = run_section([str(root)], by_file)
    assert result.exit_code == 0 and llm.count("value = compute") == 1
    assert result.tasks[0].source.tokens == get_counter("test-model").count(text)


@pytest.mark.parametrize(
    ("size", "shown"), [(45, "45 bytes"), (4_500, "4.5 KB"), (4_500_000, "4.5 MB")]
)
def test_the_inputs_line_gives_the_size_in_readable_units(size: int, shown: str) -> None:
    line = inputs_summary(Discovery(bytes=size), ESTIMATE)
    assert line == f"0 files, {shown}, 0 tokens (estimate)"
