"""The base every foldnet package stands on: one error tree, one file writer, one HTTP client.

It imports nothing else of foldnet, so ``sims`` and ``ledger`` (which import nothing of the
others) may use it too; see docs/architecture.md for the layout.
"""
