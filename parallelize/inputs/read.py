"""Find the input files, read them as text, keep secrets out, and count their tokens.

Each PATH is walked in sorted relative-path order, honouring `.gitignore` files at every level and
`.git/info/exclude`, `--include`/`--exclude` globs and default excludes (VCS folders, tool caches,
files that hold secrets, what this run writes). Binary, oversized, unreadable, undecodable and
empty files are skipped and counted. A document's text is its body as framed for the model
(lines that look like frame tags escaped, see `frames`), so its token count is what is sent.
Reading, decoding and the secret scan run on this thread while tiktoken counts on a small pool
(it releases the GIL), so the tree is read once and each file is counted once.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TextIO

from ..errors import InputError
from ..recipe.model import Recipe
from .bounds import Bounds, Fence
from .counting import Marks, Pending, count_pool, submit
from .frames import display_name, escape_body
from .secrets import Finding, scan, secrets_error
from .tokens import TokenCounter
from .walk import STDIN, STDIN_NAME, PathRules, Source, iter_sources

__all__ = ["STDIN", "STDIN_NAME", "Discovery", "Document", "InputOptions", "discover"]

#: Files larger than this are skipped (generated code, data dumps, bundles); --max-file-bytes.
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
#: Bytes sniffed for NUL to tell binary from text before reading the rest.
SNIFF_BYTES = 8192

SecretPolicy = Literal["redact", "fail", "allow"]

#: Package-manager configs that are secret files only when they hold a token or password.
TOKEN_FILES = frozenset({".npmrc", ".pypirc"})
TOKEN_LINE = re.compile(r"(?im)^[^#;\n]*\b_?(?:authtoken|auth|password|token)\s*[=:]\s*\S")

#: Why a path was skipped, as the summary words it.
SKIP_LABELS = {
    "vcs": "VCS folder",
    "ignored": "ignored by .gitignore",
    "excluded": "excluded",
    "secret-file": "secret file",
    "binary": "binary",
    "too-large": "too large",
    "unreadable": "unreadable",
    "undecodable": "undecodable",
    "broken-symlink": "broken symlink",
    "symlinked-dir": "symlinked folder",
    "symlink-outside": "symlink leaving its root",
    "special": "not a regular file",
    "missing": "missing",
    "empty": "empty",
    "output": "written by this run",
}
#: charset-normalizer ranks single-byte code pages by "chaos"; on short Western text cp1257 or
#: cp1250 often tie with cp1252 (measured: French latin-1 prose, cp1257 0.0 vs cp1252 0.085) and
#: would turn "è" into "č". Within this margin the Western code page wins.
CHAOS_TOLERANCE = 0.1
_DECLARED = re.compile(rb"coding[:=]\s*([-\w.]+)|encoding=[\"']([-\w.]+)|charset=[\"']?([-\w.]+)")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Document:
    """One input text as the model sees it (secrets redacted, frame-like lines escaped) with the
    name the model sees for it."""

    path: str
    text: str
    tokens: int
    #: (end offset, tokens) of the segments a long text was counted in, cut where counts add up
    #: exactly; empty when it was counted whole. The splitter reuses them instead of recounting.
    segments: tuple[tuple[int, int], ...] = ()
    encoding: str = "utf-8"
    #: (offset, tokens before it) wherever the count is known exactly (`counting.Marks`).
    marks: Marks = ()


@dataclass(frozen=True)
class InputOptions:
    """Which files to read and what to do with secrets (recipe `inputs:` and flags)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    secrets: SecretPolicy = "redact"


@dataclass
class Discovery:
    """The documents found, plus what was skipped and which secrets were redacted."""

    documents: list[Document] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    bytes: int = 0

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)

    @property
    def tokens(self) -> int:
        return sum(d.tokens for d in self.documents)


def discover(
    paths: Sequence[str],
    *,
    counter: TokenCounter,
    options: InputOptions | None = None,
    stdin: TextIO | None = None,
    files_from: Sequence[str] = (),
    bounds: Bounds | None = None,
) -> Discovery:
    """Read every text file under `paths` (sorted, deterministic); `-` reads stdin.

    `files_from` lists more paths (from --files-from); those that no longer exist are skipped.
    `bounds` says which paths this run writes (never read) and whether listed paths may lie
    outside the working directory.
    """
    options = options or InputOptions()
    check_paths(paths)
    fence = Fence(bounds)
    fence.check_listed(files_from)
    found = Discovery()
    rules = PathRules(
        include=options.include,
        exclude=options.exclude,
        secret_files=options.secrets != "allow",
    )
    reader = _Reader(found, counter, options, rules)
    try:
        for source in iter_sources(paths, files_from, rules, found.skip, stdin, fence):
            reader.add(source)
        reader.finish()
    finally:
        reader.close()
    for reason in found.skipped:
        found.skipped[reason].sort()
    if not any(doc.text.strip() for doc in found.documents):
        where = ", ".join(display_name(p) for p in [*paths, *files_from]) or "(nothing)"
        skipped = skip_summary(found.skipped)
        raise InputError(
            f"no readable text files in {where}" + (f" (skipped: {skipped})" if skipped else ""),
            hint="point PATH at text files, or pipe text with `-`",
        )
    return found


def check_paths(paths: Sequence[str]) -> None:
    """Fail early, naming the path, when a PATH does not exist."""
    for raw in paths:
        if raw != STDIN and not os.path.lexists(raw):
            raise InputError(f"path not found: {raw}", hint="check the spelling or the directory")


def skip_summary(skipped: dict[str, list[str]]) -> str:
    """`3 binary, 1 too large`: the skip counts for a summary line."""
    return ", ".join(f"{len(v)} {SKIP_LABELS.get(k, k)}" for k, v in sorted(skipped.items()))


def read_path_list(data: bytes | str) -> list[str]:
    """Paths from a --files-from list: NUL separated when it has a NUL, else one per line."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    parts = text.split("\0") if "\0" in text else text.splitlines()
    return [p.strip("\r") for p in parts if p.strip()]


class _Reader:
    """Reads, decodes, scans and counts documents; counting runs on a thread pool."""

    def __init__(
        self, found: Discovery, counter: TokenCounter, options: InputOptions, rules: PathRules
    ) -> None:
        self.found = found
        self.counter = counter
        self.options = options
        self.rules = rules
        self.pool = count_pool()
        self.pending: list[tuple[str, str, str, Pending]] = []

    def add(self, source: Source) -> None:
        display, text = source.display, source.text
        if text is None:
            decoded = self._read(source)
            if decoded is None:
                return
            text, encoding = decoded
        else:
            encoding = "utf-8"
            self.found.bytes += len(text.encode("utf-8", "surrogatepass"))
            if not text:
                self.found.skip("empty", display)
                return
        if self.options.secrets != "allow":
            text, findings = scan(display, text)
            self.found.findings.extend(findings)
        text = escape_body(text)  # counted as sent: the escapes cost tokens too
        self.pending.append((display, text, encoding, submit(self.pool, self.counter, text)))

    def finish(self) -> None:
        if self.options.secrets == "fail" and self.found.findings:
            raise secrets_error(self.found.findings)
        for *_, pending in reversed(self.pending):  # from the end: the pool starts at the front
            pending.help()
        for display, text, encoding, pending in self.pending:
            counted = pending.result()
            self.found.documents.append(
                Document(display, text, counted.tokens, counted.segments, encoding, counted.marks)
            )
        self.pending.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, source: Source) -> tuple[str, str] | None:
        """Text and encoding of a file, or None after recording why it was skipped."""
        reason = None
        if not source.regular:  # named on the command line or a symlink: maybe a FIFO or a folder
            try:
                info = os.stat(source.path)
            except OSError:
                info = None
            if info is None:
                reason = "broken-symlink" if os.path.islink(source.path) else "unreadable"
            elif not stat.S_ISREG(info.st_mode):
                reason = "symlinked-dir" if stat.S_ISDIR(info.st_mode) else "special"
        if reason is None:
            data = _read_bytes(source.path, self.options.max_file_bytes)
            if isinstance(data, str):
                reason = data
            else:
                self.found.bytes += len(data)
                decoded = decode_text(data)
                if decoded is None:
                    reason = "binary" if b"\0" in data else "undecodable"
                elif not decoded[0]:  # nothing to send: a request would be paid for nothing
                    reason = "empty"
                elif self._token_file(source.path, decoded[0]):
                    reason = "secret-file"
                if reason is None:
                    return decoded
        self.found.skip(reason, source.display)
        return None

    def _token_file(self, path: str, text: str) -> bool:
        """An .npmrc or .pypirc that holds a token or password."""
        name = os.path.basename(path)
        return self.rules.secret_files and name in TOKEN_FILES and bool(TOKEN_LINE.search(text))


def recount(documents: Sequence[Document], counter: TokenCounter) -> list[Document]:
    """The same documents counted with another counter (the server's tokenizer, say)."""
    with count_pool() as pool:
        pending = [submit(pool, counter, doc.text) for doc in documents]
        for counting in reversed(pending):
            counting.help()
        out = []
        for doc, counting in zip(documents, pending, strict=True):
            counted = counting.result()
            out.append(
                replace(doc, tokens=counted.tokens, segments=counted.segments, marks=counted.marks)
            )
        return out


def _read_bytes(path: str, cap: int) -> bytes | str:
    """The file's bytes, or the skip reason: too large, binary (NUL early on), unreadable."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > cap:
                return "too-large"
            head = handle.read(SNIFF_BYTES)
            if b"\0" in head and not head.startswith(tuple(b for b, _ in _BOMS)):
                return "binary"
            rest = handle.read(cap + 1 - len(head)) if len(head) == SNIFF_BYTES else b""
    except OSError:
        return "unreadable"
    data = head + rest
    return "too-large" if len(data) > cap else data


def decode_text(data: bytes) -> tuple[str, str] | None:
    """Text and encoding: a BOM, UTF-8, a declared coding, then detection; None if not text."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    declared = _DECLARED.search(data[:1024])
    if declared:
        name = next(g for g in declared.groups() if g).decode("ascii", "replace")
        try:
            return data.decode(name), codecs.lookup(name).name
        except (LookupError, UnicodeDecodeError):
            pass
    return _detect(data)


def _detect(data: bytes) -> tuple[str, str] | None:
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    for match in matches:
        western = "cp1252" in (match.encoding, *match.could_be_from_charset)
        if western and match.chaos <= best.chaos + CHAOS_TOLERANCE:
            try:
                return data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                return data.decode("latin-1"), "latin-1"
    return str(best), best.encoding


#: Secret findings listed one per warning line before the rest are summed up.
SHOWN_FINDINGS = 10


def replace_documents(found: Discovery, documents: list[Document]) -> Discovery:
    """The same discovery with recounted documents."""
    return Discovery(documents, found.skipped, found.findings, found.bytes)


def input_options(recipe: Recipe) -> InputOptions:
    """The discovery options a recipe's `inputs:` block asks for."""
    inputs = recipe.inputs
    return InputOptions(
        include=tuple(inputs.include),
        exclude=tuple(inputs.exclude),
        max_file_bytes=inputs.max_file_bytes or DEFAULT_MAX_FILE_BYTES,
        secrets=inputs.on_secret,
    )


def format_bytes(size: int) -> str:
    """`512 bytes`, `340.2 KB`, `37.1 MB` ("0.0 KB" would say nothing)."""
    if size < 1000:
        return f"{size} bytes"
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} KB"


def inputs_summary(found: Discovery, counter: TokenCounter) -> str:
    """`12 files, 340 KB, 81,000 tokens (o200k_base); skipped 3 binary; 1 secret redacted`."""
    files, shown = len(found.documents), format_bytes(found.bytes)
    text = f"{files:,} file{'s' * (files != 1)}, {shown}, {found.tokens:,} tokens ({counter.name})"
    skipped = skip_summary(found.skipped)
    if skipped:
        text += f"; skipped {skipped}"
    if found.findings:
        text += f"; {len(found.findings)} secret(s) redacted"
    return text


def secret_warnings(found: Discovery) -> list[str]:
    """One warning per redacted secret (file:line:rule, value masked), the rest summed up."""
    lines = [f"secret redacted: {f.masked()}" for f in found.findings[:SHOWN_FINDINGS]]
    rest = len(found.findings) - SHOWN_FINDINGS
    if rest > 0:
        lines.append(f"{rest} more secret(s) redacted (--verbose lists them)")
    return lines
