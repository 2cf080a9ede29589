"""Command-line tools (crowdless-rank)."""
