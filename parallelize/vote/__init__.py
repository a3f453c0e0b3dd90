"""Candidates -> one winner: VOTERS (judge, rubric, consensus, weighted)."""
