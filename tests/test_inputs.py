"""Discovery on messy real trees: order, .gitignore, skips, decoding, secret files, --files-from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parallelize.errors import InputError
from parallelize.inputs.read import (
    Discovery,
    InputOptions,
    decode_text,
    discover,
    read_path_list,
    recount,
)
from parallelize.inputs.tokens import ESTIMATE, get_counter


def find(*paths: str | Path, **options: object) -> Discovery:
    return discover([str(p) for p in paths], counter=ESTIMATE, options=InputOptions(**options))


def names(found: Discovery, root: Path) -> list[str]:
    return [os.path.relpath(d.path, root).replace(os.sep, "/") for d in found.documents]


def skipped(found: Discovery, root: Path) -> dict[str, list[str]]:
    def rel(path: str) -> str:
        return os.path.relpath(path, root).replace(os.sep, "/") + "/" * path.endswith("/")

    return {reason: [rel(p) for p in paths] for reason, paths in found.skipped.items()}


def test_order_is_sorted_relative_paths_not_walk_order(make_tree) -> None:
    files = ["b.py", "a/z.py", "a/b/c.py", "a.py", "a/b.py", "a-b.py"]
    root = make_tree({f: f"# {f}\n" for f in files})
    found = find(root)
    assert names(found, root) == sorted(files)  # "a-b.py" < "a.py" < "a/b.py" < "a/b/c.py" ...
    assert [d.path for d in find(root).documents] == [d.path for d in found.documents]


def test_nested_gitignore_and_info_exclude(make_tree) -> None:
    root = make_tree(
        {
            ".gitignore": "*.log\nbuild/\n",
            ".git/info/exclude": "notes.txt\n",
            ".git/HEAD": "ref: refs/heads/main\n",
            "a.py": "a\n",
            "x.log": "x\n",
            "notes.txt": "private\n",
            "build/out.txt": "built\n",
            "sub/.gitignore": "!keep.log\n*.tmp\n",
            "sub/keep.log": "kept\n",
            "sub/other.log": "other\n",
            "sub/z.tmp": "z\n",
            "elsewhere/z.tmp": "not ignored here\n",
        }
    )
    found = find(root)
    assert names(found, root) == [
        ".gitignore",
        "a.py",
        "elsewhere/z.tmp",
        "sub/.gitignore",
        "sub/keep.log",
    ]
    gone = skipped(found, root)
    assert sorted(gone["ignored"]) == ["build/", "notes.txt", "sub/other.log", "sub/z.tmp", "x.log"]
    assert gone["vcs"] == [".git/"]
    # Walking a sub-folder still honours the .gitignore above it...
    assert names(find(root / "sub"), root) == ["sub/.gitignore", "sub/keep.log"]
    # ...and a folder that is itself ignored is read when asked for by name.
    assert names(find(root / "build"), root) == ["build/out.txt"]


def test_binary_latin1_symlinks_unreadable_special_and_empty_dir(make_tree, tmp_path) -> None:
    root = make_tree({"ok.txt": "fine\n", "sub/empty/.keep": ""})
    (root / "sub/empty/.keep").unlink()  # an empty directory
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(64))
    (root / "latin.txt").write_bytes("café crème brûlée, naïve façade\n".encode("latin-1"))
    (root / "loop").symlink_to(".", target_is_directory=True)  # a symlink cycle
    (root / "ping").symlink_to("pong")
    (root / "pong").symlink_to("ping")  # a symlink loop between two files
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo")  # opening it would block forever
    as_root = os.geteuid() == 0
    if as_root:  # root reads any file; this one fails on read instead
        (root / "unreadable").symlink_to("/proc/self/mem")
    else:
        (root / "unreadable").write_text("secret\n")
        (root / "unreadable").chmod(0)
    found = find(root)
    assert names(found, root) == ["latin.txt", "ok.txt"]
    latin = found.documents[0]
    assert latin.text == "café crème brûlée, naïve façade\n" and latin.encoding == "cp1252"
    assert skipped(found, root) == {
        "binary": ["logo.png"],
        "broken-symlink": ["dangling", "ping", "pong"],
        "special": ["fifo"],
        "symlinked-dir": ["loop"],
        # Found by the walk, a symlink that leads out of the tree is not followed at all.
        ("symlink-outside" if as_root else "unreadable"): ["unreadable"],
    }
    if as_root:  # named on the command line, it is followed, and fails on read
        named = discover([str(root / "unreadable"), str(root / "ok.txt")], counter=ESTIMATE)
        assert named.skipped == {"unreadable": [f"{root}/unreadable"]}


def test_size_cap_skips_without_reading_and_can_be_raised(tmp_path: Path) -> None:
    big = tmp_path / "one-line.txt"
    big.write_text("word " * 2_000_000)  # 10 MB on a single line
    (tmp_path / "small.txt").write_text("small\n")
    found = find(tmp_path)
    assert names(found, tmp_path) == ["small.txt"]
    assert skipped(found, tmp_path) == {"too-large": ["one-line.txt"]}
    raised = find(big, max_file_bytes=20_000_000)
    assert raised.documents[0].tokens == ESTIMATE.count(big.read_text()) > 1_000_000


def test_files_that_hold_secrets_are_skipped_unless_allowed(make_tree) -> None:
    files = {
        ".env": "A=1\n",
        ".env.local": "A=1\n",
        ".env.example": "A=\n",
        "id_rsa": "key\n",
        "id_rsa.pub": "ssh-rsa AAAA\n",
        "server.pem": "cert\n",
        "server.key": "key\n",
        "store.p12": "x\n",
        "credentials.json": "{}\n",
        "deploy/.npmrc": "//registry.npmjs.org/:_authToken=abc\n",
        "plain/.npmrc": "registry=https://registry.npmjs.org/\n",
        ".pypirc": "[pypi]\npassword = pypi-abc\n",
        "main.py": "x = 1\n",
    }
    root = make_tree(files)
    found = find(root)
    assert names(found, root) == [".env.example", "id_rsa.pub", "main.py", "plain/.npmrc"]
    assert sorted(skipped(found, root)["secret-file"]) == [
        ".env",
        ".env.local",
        ".pypirc",
        "credentials.json",
        "deploy/.npmrc",
        "id_rsa",
        "server.key",
        "server.pem",
        "store.p12",
    ]
    assert len(find(root, secrets="allow").documents) == len(files)
    # Named on the command line, a secret file is still skipped.
    with pytest.raises(InputError, match=r"no readable text files .*1 secret file"):
        find(root / ".env")


def test_include_and_exclude_globs(make_tree) -> None:
    root = make_tree(
        {"src/a.py": "a\n", "src/b.md": "b\n", "tests/t.py": "t\n", "docs/x/y.py": "y\n"}
    )
    found = find(root, include=("*.py",), exclude=("tests/", "docs/x/"))
    assert names(found, root) == ["src/a.py"]
    assert sorted(skipped(found, root)["excluded"]) == ["docs/x/", "src/b.md", "tests/"]


def test_files_from_lists(make_tree, monkeypatch) -> None:
    root = make_tree({"a.py": "a\n", "b.py": "b\n", "dir/c.py": "c\n", "dir/d.py": "d\n"})
    monkeypatch.chdir(root)
    assert read_path_list(b"a.py\r\ngone.py\n\ndir\n") == ["a.py", "gone.py", "dir"]
    assert read_path_list(b"a.py\0with\nnewline.py\0") == ["a.py", "with\nnewline.py"]
    listed = ["b.py", "gone.py", "dir", "a.py", "b.py"]
    found = discover([], counter=ESTIMATE, files_from=listed)
    assert [d.path for d in found.documents] == ["b.py", "dir/c.py", "dir/d.py", "a.py"]
    assert found.skipped == {"missing": ["gone.py"]}


def test_decoding(tmp_path: Path) -> None:
    assert decode_text("é\n".encode("utf-16")) == ("é\n", "utf-16")
    assert decode_text(b"\xef\xbb\xbfhi\n") == ("hi\n", "utf-8-sig")
    declared = "# -*- coding: latin-1 -*-\nname = 'Fran\xe7ois'\n".encode("latin-1")
    assert decode_text(declared) == (declared.decode("latin-1"), "iso8859-1")
    assert decode_text(bytes(range(0x80, 0x100)) * 4) is None  # no encoding makes sense of it
    (tmp_path / "noise.txt").write_bytes(bytes(range(0x80, 0x100)) * 4)
    (tmp_path / "ok.txt").write_text("ok\n")
    assert find(tmp_path).skipped == {"undecodable": [f"{tmp_path}/noise.txt".replace(os.sep, "/")]}


def test_missing_path_and_nothing_readable(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"path not found: .*nope"):
        find(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable text files"):
        find(tmp_path / "empty")


def test_counts_are_each_files_count_with_the_counter_in_use(make_tree) -> None:
    counter = get_counter("gpt-4o")
    block = "def f{i}(x):\n    return x * {i}\n\n\n"
    files = {
        "small.py": "print('hi')\n",
        "large.py": "".join(block.format(i=i) for i in range(4000)),  # counted in segments
    }
    found = discover([str(make_tree(files))], counter=counter)
    large = found.documents[0]
    assert len(large.segments) > 1 and large.segments[-1][0] == len(large.text)
    assert sum(t for _, t in large.segments) == large.tokens
    for doc in found.documents:
        whole = counter.count(doc.text)
        if counter.exact:  # tiktoken: segments cut where counts add up exactly
            assert doc.tokens == whole
        else:  # the estimate rounds each segment up
            assert whole <= doc.tokens <= whole + len(doc.segments)
    again = recount(found.documents, ESTIMATE)
    assert [d.text for d in again] == [d.text for d in found.documents]
    assert all(d.tokens >= ESTIMATE.count(d.text) for d in again)
