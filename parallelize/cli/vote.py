"""The `parallelize vote` command: parse its options, call run_vote, hand the result to render.

Registered on the one Typer app of cli.py; like every command, heavy modules are imported inside.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..defaults import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from ..errors import InputError
from ..render.lines import print_notice
from ..render.pick import can_pick
from .common import engine_options, finish, run_with_progress, usage_error
from .helpformat import PROMPT, VOTING
from .options import (
    BaseUrlOpt,
    ConcurrencyOpt,
    DryRunOpt,
    Format,
    FormatOpt,
    MaxTokensOpt,
    OutputOpt,
    QuietOpt,
    RetriesOpt,
    SystemOpt,
    TimeoutOpt,
    VerboseOpt,
)
from .report import ReportOpt, check_report

if TYPE_CHECKING:
    from ..records import RunResult


class Strategy(str, Enum):
    judge = "judge"
    rubric = "rubric"
    consensus = "consensus"
    weighted = "weighted"


class Match(str, Enum):
    exact = "exact"
    similar = "similar"


#: The examples at the end of `vote --help`.
EXAMPLES = """
parallelize vote "Write a tagline for a bakery" -n 5        # a judge keeps the best
parallelize vote @question.txt -r answer -n 15 --early-stop  # the majority answer
git log -1 --format=%B | parallelize vote - -r headline      # checks, then rubric scores
parallelize vote "Name this release" -n 5 --pick > name.txt  # you pick from the table
parallelize vote "Is 2^31-1 prime? End with ANSWER: yes|no" --strategy weighted \\
  --answer-pattern 'ANSWER: (\\w+)' -m gpt-4o-mini -m gpt-4.1-mini --weight gpt-4.1-mini=2
"""


@engine_options(tools=True)
def vote(
    task: Annotated[
        str | None,
        typer.Argument(
            help="The task: text, @file, or - for stdin (optional when the recipe carries it).",
            show_default=False,
            metavar="TASK",
        ),
    ] = None,
    n: Annotated[
        int | None,
        typer.Option(
            "-n",
            metavar="N",
            help="Candidates to generate (default 3).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            "-r",
            metavar="NAME|FILE",
            help="Built-in recipe name (see `parallelize recipes`) or a .yaml file.",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            "--strategy",
            "-s",
            metavar="|".join(kind.value for kind in Strategy),
            help="How to pick (default judge).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model (env PARALLELIZE_MODEL); repeat to spread the N attempts round-robin.",
            show_default=False,
            metavar="MODEL",
            rich_help_panel=PROMPT,
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            help="How much a model's vote counts (weighted); repeatable.",
            show_default=False,
            metavar="NAME=W",
            rich_help_panel=VOTING,
        ),
    ] = None,
    judge_model: Annotated[
        str | None,
        typer.Option(
            "--judge-model",
            metavar="MODEL",
            help="Model that judges or scores (default: the first model).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    judge_rounds: Annotated[
        int | None,
        typer.Option(
            "--judge-rounds",
            metavar="N",
            help="Judge calls with different orders; majority wins (default 1).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    quorum: Annotated[
        float | None,
        typer.Option(
            "--quorum",
            metavar="SHARE",
            help="Share of the N votes the winner needs, e.g. 0.6 (default: more than half).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    match: Annotated[
        Match | None,
        typer.Option(
            "--match",
            metavar="exact|similar",
            help="exact (default with --answer-pattern) or similar.",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    answer_pattern: Annotated[
        str | None,
        typer.Option(
            "--answer-pattern",
            metavar="REGEX",
            help="Regex whose group 1 (last match) is the final answer.",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    early_stop: Annotated[
        bool | None,
        typer.Option(
            "--early-stop/--no-early-stop",
            help="Draw samples in waves; stop once the rest cannot change the result "
            "(consensus/weighted with exact matching). Default: the recipe's early_stop.",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(
            "--confidence",
            help="Stop early once the leader wins the full vote with this probability "
            "(0.5-1; implies --early-stop; may differ from the full run).",
            show_default=False,
            metavar="P",
            rich_help_panel=VOTING,
        ),
    ] = None,
    criteria: Annotated[
        list[str] | None,
        typer.Option(
            "--criterion",
            help="Rubric criterion, weight after '::' (default 1); repeatable.",
            show_default=False,
            metavar="TEXT[::W]",
            rich_help_panel=VOTING,
        ),
    ] = None,
    checks: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            help="Hard check: max_chars, min_chars, regex, must_include, must_not_include, "
            "valid_json; repeatable.",
            show_default=False,
            metavar="NAME=VALUE",
            rich_help_panel=VOTING,
        ),
    ] = None,
    min_candidates: Annotated[
        int | None,
        typer.Option(
            "--min-candidates",
            metavar="N",
            help="Successful candidates needed to vote (default 2).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            metavar="N",
            help="Drives the judge's shuffle; attempt i sends seed+i (default: derived).",
            show_default=False,
            rich_help_panel=VOTING,
        ),
    ] = None,
    pick: Annotated[
        bool,
        typer.Option(
            "--pick",
            help="You pick the winner from the candidates table (Enter keeps the strategy's, "
            "q quits); needs a terminal on stdin and stderr.",
            rich_help_panel=VOTING,
        ),
    ] = False,
    system: SystemOpt = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            "-t",
            min=0,
            max=2,
            metavar="T",
            help="Sampling temperature, 0 to 2 (default 0.8).",
            show_default=False,
            rich_help_panel=PROMPT,
        ),
    ] = None,
    max_tokens: MaxTokensOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = None,
    output: OutputOpt = None,
    report: ReportOpt = None,
    fmt: FormatOpt = Format.text,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    max_retries: RetriesOpt = DEFAULT_MAX_RETRIES,
    *,
    engine: dict[str, Any],
) -> None:
    """Run the same task N times in parallel, then pick ONE answer (judge, rubric, consensus or
    weighted)."""
    if n is not None and n < 1:
        usage_error(f"-n must be at least 1 (got {n})")
    if pick and dry_run:
        usage_error("--pick and --dry-run cannot be combined: a dry run has no candidates to pick")
    if pick and engine.get("batch") is not None:
        usage_error("--pick and --batch cannot be combined yet: pick from a finished run instead")
    if pick and not can_pick():
        usage_error(
            "--pick needs a terminal: stdin and stderr must be a terminal to show the candidates "
            "and read your pick (stdout may be redirected, e.g. > winner.txt)"
        )
    # Set by the job: whether the recipe prints the extracted answer instead of the whole text.
    answer_only: list[bool] = []
    if fmt is Format.sarif:
        usage_error("--format sarif: a vote has no findings with locations (--format text or json)")
    check_report(report, dry_run=dry_run)

    def job() -> RunResult:
        # Imported here, in the command: --help loads none of the pipeline.
        from ..recipe.load import find_recipe, override
        from ..recipe.model import Recipe
        from ..run import run_vote
        from ..tools.kit import root_refusal
        from .vote_flags import apply_vote_flags, parse_weight

        base = find_recipe(recipe) if recipe else Recipe(name="vote", mode="vote")
        text = _read_task(task)
        weighted = dict(parse_weight(w) for w in weights or ())
        final = override(
            base,
            {
                "system": system,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "seed": seed,
                "concurrency": concurrency,
                "max_tasks": engine["max_tasks"],
            },
        )
        final = apply_vote_flags(
            final,
            models=models or (),
            weights=weighted,
            criteria=criteria or (),
            checks=checks or (),
            env_model=os.environ.get("PARALLELIZE_MODEL"),
            vote={
                "n": n,
                "strategy": strategy and strategy.value,
                "judge_model": judge_model,
                "judge_rounds": judge_rounds,
                "quorum": quorum,
                "match": match and match.value,
                "answer_pattern": answer_pattern,
                "min_candidates": min_candidates,
                "early_stop": early_stop,
                "confidence": confidence,
            },
        )
        answer_only.append(final.vote.output == "answer")
        refused = root_refusal(
            [*final.tools, *engine["tools"]], engine["tool_root"], why="a vote has no PATH"
        )
        if refused:
            usage_error(refused)
        if not recipe and not quiet:
            from ..vote.setup import DEFAULT_VOTE_TEMPERATURE  # loaded by run_vote anyway

            settings = final.vote
            heat = DEFAULT_VOTE_TEMPERATURE if final.temperature is None else final.temperature
            print_notice(
                f"no recipe: TASK is the prompt; {settings.n} samples, strategy "
                f"{settings.strategy}, temperature {heat} (--recipe to choose)"
            )
        return run_with_progress(
            lambda options: run_vote(text, final, options=options),
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            dry_run=dry_run,
            quiet=quiet,
            engine=engine,
        )

    def pick_winner(result: RunResult) -> RunResult:
        from ..render.pick import human_pick  # here: only with --pick

        return human_pick(result, answer_only=any(answer_only))

    finish(
        job,
        fmt=fmt,
        output=output,
        quiet=quiet,
        verbose=verbose,
        report=report,
        pick=pick_winner if pick else None,
    )


def _read_task(raw: str | None) -> str | None:
    """The task text from an argument: literal text, `@file`, or `-` for stdin."""

    if raw == "-":
        return sys.stdin.read()
    if raw is not None and raw.startswith("@") and len(raw) > 1:
        path = Path(raw[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot read the task file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"the task file {path} is not UTF-8 text") from None
    return raw
