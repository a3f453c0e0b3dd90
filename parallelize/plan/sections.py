"""From PATHs and a recipe to a checked chunk plan, before any chat request is made.

One place decides the token counter (recipe `tokenizer:`), the context window (recipe, then the
server, then the built-in table), the budget per request and the chunks; a chunk that cannot fit
is an error naming its files, and secrets are redacted (or the run stops) before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigError, InputError, first_few
from ..inputs.bounds import Bounds
from ..inputs.read import (
    Discovery,
    Document,
    discover,
    input_options,
    inputs_summary,
    recount,
    replace_documents,
    secret_warnings,
)
from ..inputs.tokens import BYTES_BOUND, ESTIMATE, CountStore, TokenCounter, for_model
from ..recipe.model import Recipe
from ..reports import InputsReport
from .chunking import Chunk, ChunkPlan, Costs, chunk_budget, chunk_count, chunk_files
from .tasks import SectionTemplate, checked, section_tasks
from .template import placeholders
from .window import ServerFacts, choose_counter, resolve_window

if TYPE_CHECKING:
    from ..engine.client import ChatClient, Endpoint

#: Input tokens per chunk when no chunking flag is given (capped by the context window).
DEFAULT_CHUNK_TOKENS = 12_000
#: Output tokens reserved in the context window when the recipe sets no max_tokens.
RESERVED_OUTPUT_TOKENS = 1_024
#: Tokens kept free in every request for what counting cannot see (joins, rounding).
REQUEST_SLACK = 8
#: The least input a chunk budget must leave room for.
MIN_INPUT_TOKENS = 16


@dataclass
class Prepared:
    """The chunk plan and everything the summary and the JSON report say about the inputs."""

    plan: ChunkPlan
    discovery: Discovery
    counter: TokenCounter
    window: int
    window_source: str
    warnings: list[str] = field(default_factory=list)
    #: False when the fit in the context window is left for `refine_section` to check.
    checked: bool = True
    #: Where the window and the counter came from when the endpoint was asked (or remembered).
    facts: str = ""

    def report(self) -> InputsReport:
        """What was read, for the summary and `--format json`."""
        found = self.discovery
        return InputsReport(
            counter=self.counter.name,
            context_window=self.window,
            context_window_source=self.window_source,
            files=len(found.documents),
            bytes=found.bytes,
            tokens=found.tokens,
            skipped=found.skipped,
            secrets=[vars(f) for f in found.findings],
            encodings={d.path: d.encoding for d in found.documents if d.encoding != "utf-8"},
            summary=inputs_summary(found, self.counter),
            margin=self.counter.margin,
            facts=self.facts,
        )


@dataclass(frozen=True)
class FirstPass:
    """What the local pass, before the endpoint is asked anything, may leave for later.

    This is the start-up fast path: the first request goes out sooner when the local pass
    proves less.
    """

    #: The server may know another window or count differently: a chunk that does not fit the
    #: table's window is judged after asking it (still before any chat request).
    ask_later: bool = False
    #: Token counts are needed before the first request only to estimate (a dry run, a budget)
    #: or to pace tokens; otherwise `--by file` plans small files on their byte lengths.
    count_first: bool = True


def first_pass(recipe: Recipe, endpoint: Endpoint | None, *, needs_counts: bool) -> FirstPass:
    """How much the local pass must prove for this endpoint (None: a dry run)."""
    if endpoint is None:
        return FirstPass()
    # The endpoint's own counter is the default wherever it has one; it may know the window.
    counts = recipe.tokenizer in (None, "server")
    server = not endpoint.is_openai and (counts or not recipe.context_window)
    return FirstPass(ask_later=server, count_first=needs_counts)


def prepare_section(
    paths: Sequence[str],
    recipe: Recipe | SectionTemplate,
    *,
    model: str | None,
    stdin: TextIO | None = None,
    files_from: Sequence[str] = (),
    bounds: Bounds | None = None,
    ask_later: bool = False,
    count_first: bool = True,
) -> Prepared:
    """Read, scan, count and chunk the input without asking the endpoint anything.

    Everything that can fail before a request fails here: templates, paths, secrets under
    --on-secret fail, chunks too big for the context window (unless `ask_later`: the endpoint
    may know a larger window, and `refine_section` checks then). With a matrix and no PATH there
    is one empty chunk. Without `count_first` (nothing before the first request needs token
    counts), `--by file` first tries to prove with byte lengths that every file fits whole; the
    exact counts are then left to `count_exactly`. `bounds`: see `inputs.bounds`.
    """
    template = checked(recipe)  # a bad template fails here, before anything is read
    recipe = template.recipe
    window, source = resolve_window(recipe, model, None)
    bounded = not count_first and _bound_suffices(recipe) and bool(paths or files_from)
    if not paths and not files_from:
        if not recipe.matrix:
            raise InputError(
                "missing PATH: give files, directories, or - for stdin",
                hint="PATH may be left out only with --files-from, --each or a recipe matrix",
            )
        counter = choose_counter(recipe.tokenizer, model, None)
        return Prepared(ChunkPlan([Chunk(0, ())]), Discovery(), counter, window, source)
    # The endpoint is asked next and counts with its own tokenizer where it has one, so its
    # plan replaces this one: here the calibrated estimate finds what fails before any request
    # (an output path, a fan-out) without loading tiktoken (0.2 s of a cached re-run).
    rough = ask_later and not bounded and recipe.tokenizer in (None, "server")
    if bounded:
        counter = BYTES_BOUND
    elif rough:
        counter = for_model(ESTIMATE, model)
    else:
        counter = choose_counter(recipe.tokenizer, model, None)
    found = discover(
        paths,
        counter=counter,
        options=input_options(recipe),
        stdin=stdin,
        files_from=files_from,
        bounds=bounds,
    )
    if bounded:
        whole = _whole_files(found, template, model, window, source)
        if whole is not None:
            return whole
        counter = choose_counter(recipe.tokenizer, model, None)
        found = replace_documents(found, recount(found.documents, counter))
    return _planned(found, template, counter, model, window, source, strict=not ask_later)


def refine_section(
    prepared: Prepared,
    template: SectionTemplate,
    *,
    model: str,
    client: ChatClient | None,
    facts: ServerFacts | None = None,
    store: CountStore | None = None,
    where: str = "",
) -> Prepared:
    """Re-plan with what the endpoint said (its window, its tokenizer); `facts` is what
    `server_facts` found (asked here when None), `where` says where it came from.

    Only metadata is asked (llama.cpp /props, /tokenize and /apply-template, the model list,
    vLLM /tokenize), never a chat; counts are kept in `store`.
    """
    recipe = template.recipe
    window, source = resolve_window(recipe, model, client, facts=facts)
    found = prepared.discovery
    if prepared.counter is BYTES_BOUND:
        if window >= prepared.window:  # every file fit a smaller window whole: the plan stands
            return replace(prepared, window=window, window_source=source, facts=where)
        whole = _whole_files(found, template, model, window, source)
        if whole is not None:
            return replace(whole, facts=where)
        counter = choose_counter(recipe.tokenizer, model, client, facts=facts, store=store)
        found = replace_documents(found, _recount(found.documents, counter))
        return replace(_planned(found, template, counter, model, window, source), facts=where)
    counter = choose_counter(recipe.tokenizer, model, client, facts=facts, store=store)
    same_counts = counter.name == prepared.counter.name and counter.render is None
    same_plan = counter.margin == prepared.counter.margin and counter.note == prepared.counter.note
    same_window = window == prepared.window and prepared.checked
    if same_counts and same_plan and same_window:
        return replace(prepared, facts=where)
    if not same_counts and found.documents:
        found = replace_documents(found, _recount(found.documents, counter))
    if not found.documents:  # a matrix without input: nothing to cut
        planned = Prepared(prepared.plan, found, counter, window, source, prepared.warnings)
        return replace(planned, facts=where)
    return replace(_planned(found, template, counter, model, window, source), facts=where)


def _recount(documents: Sequence[Document], counter: TokenCounter) -> list[Document]:
    """The documents counted again; a server counts them all at once first (concurrently)."""
    if counter.count_many is not None:
        counter.count_many([doc.text for doc in documents])  # then each count is remembered
    return recount(documents, counter)


def _bound_suffices(recipe: Recipe) -> bool:
    """Whether byte lengths may stand in for token counts: one chunk per file, default counter."""
    chunking = recipe.chunking
    default = chunking.chunks is None and chunking.chunk_tokens is None
    return chunking.by == "file" and default and recipe.tokenizer is None


def _whole_files(
    found: Discovery, template: SectionTemplate, model: str | None, window: int, source: str
) -> Prepared | None:
    """The one-chunk-per-file plan when byte lengths prove every file fits whole, else None."""
    try:
        prepared = _planned(found, template, BYTES_BOUND, model, window, source, strict=False)
    except InputError:  # a piece too big even when cut: the tokenizer decides
        return None
    whole = prepared.checked and len(prepared.plan.chunks) == len(found.documents)
    return prepared if whole else None


def _planned(
    found: Discovery,
    template: SectionTemplate,
    counter: TokenCounter,
    model: str | None,
    window: int,
    source: str,
    *,
    strict: bool = True,
) -> Prepared:
    """The chunk plan for a window; not strict: a window too small is left for later."""
    warnings: list[str] = []
    try:
        plan = plan_chunks(
            found.documents,
            template,
            counter=counter,
            model=model,
            window=window,
            on_warning=warnings.append,
        )
    except ConfigError:
        if strict:
            raise
        return Prepared(ChunkPlan([]), found, counter, window, source, checked=False)
    notes = [counter.note] if counter.note else []
    if plan.warning:
        warnings.append(plan.warning)
    every = notes + warnings + secret_warnings(found)
    return Prepared(plan, found, counter, window, source, every)


def prompt_overhead(template: SectionTemplate, counter: TokenCounter) -> int:
    """Tokens of the largest request with an empty chunk (any aspect or clone): the fixed cost,
    measured once per counter."""
    if counter.name not in template.overheads:
        empty = section_tasks(template, [Chunk(0, ())], model="-")
        largest = max(counter.request_tokens(task.request.messages) for task in empty)
        template.overheads[counter.name] = largest + REQUEST_SLACK
    return template.overheads[counter.name]


def plan_chunks(
    documents: Sequence[Document],
    recipe: Recipe | SectionTemplate,
    *,
    counter: TokenCounter,
    model: str | None,
    window: int | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ChunkPlan:
    """Cut the documents the way the recipe's chunking asks; every chunk fits the window."""
    template = checked(recipe)
    recipe = template.recipe
    chunking = recipe.chunking
    window = window or resolve_window(recipe, model, None)[0]
    reserve = recipe.max_tokens or RESERVED_OUTPUT_TOKENS
    overhead = prompt_overhead(template, counter)
    usable = int(window * (1 - counter.margin))
    room = usable - reserve - overhead
    if room < MIN_INPUT_TOKENS:
        raise ConfigError(
            f"the context window ({window:,} tokens) leaves no room for input after the prompt "
            f"({overhead:,} tokens) and the answer ({reserve:,} tokens)",
            hint="set context_window (--context-window), or lower max_tokens",
        )
    costs = Costs(counter, paths_listed="paths" in placeholders(recipe.prompt))
    overlap = chunking.overlap
    if chunking.chunks:
        plan = chunk_count(
            documents, chunking.chunks, counter, costs=costs, overlap=overlap, hard_budget=room
        )
        check_fit(plan, room, window=window, reserve=reserve, overhead=overhead)
        return plan
    budget = min(room, DEFAULT_CHUNK_TOKENS)
    if chunking.chunk_tokens:
        budget = chunking.chunk_tokens - overhead
        if budget < MIN_INPUT_TOKENS:
            raise ConfigError(
                f"--chunk-tokens {chunking.chunk_tokens} leaves no room for input: "
                f"the system prompt and template alone take about {overhead} tokens"
            )
        if budget > room and on_warning:  # the budget may be the recipe's, not a flag
            on_warning(
                f"the chunk budget of {chunking.chunk_tokens:,} tokens (--chunk-tokens or the "
                "recipe's chunking.chunk_tokens) does not fit the context window "
                f"({window:,} tokens with {reserve:,} kept for the answer); "
                f"using {room + overhead:,}"
            )
        budget = min(budget, room)
    if chunking.by == "file":
        plan = chunk_files(documents, budget, counter, costs=costs, overlap=overlap)
    else:
        plan = chunk_budget(documents, budget, counter, costs=costs, overlap=overlap)
    check_fit(plan, room, window=window, reserve=reserve, overhead=overhead)
    return plan


def check_fit(plan: ChunkPlan, room: int, *, window: int, reserve: int, overhead: int) -> None:
    """A chunk plus prompt that cannot fit the context window is an error naming its files."""
    for chunk in plan.chunks:
        if chunk.cost > room:
            named = first_few(chunk.paths)
            raise InputError(
                f"chunk {chunk.index + 1}/{len(plan.chunks)} ({named}) needs about "
                f"{chunk.cost + overhead:,} tokens with the prompt, but the context window "
                f"({window:,} tokens, {reserve:,} kept for the answer) leaves {room + overhead:,}",
                hint="use more --chunks, or --chunk-tokens, or set --context-window",
            )
