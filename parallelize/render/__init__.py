"""The only place that prints: progress, plans, summaries, JSON documents and output files.

`lines` (plain stderr lines, standard library only), `terminal` (progress, summary, vote table),
`plan` (a dry run's plan) and `document` (the artifact and `--format json`). For CI: `findings`
(review findings with a file and line), `sarif` (`--format sarif`), `workflow` (GitHub workflow
commands), `github` (annotations in GitHub Actions) and `stepsummary` (its step summary page).
"""
