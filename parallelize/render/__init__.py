"""The only place that prints: progress, plans, summaries, JSON documents and output files.

`lines` (plain stderr lines, standard library only), `terminal` (progress, summary, vote table),
`plan` (a dry run's plan) and `document` (the artifact and `--format json`).
"""
