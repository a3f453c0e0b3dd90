"""Section results -> one output: MERGERS (concat, json, llm map-reduce, files), guard."""
