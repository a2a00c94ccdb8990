"""One module per bench, each with ``run() -> Figures``; ``bench/run.py NAME`` runs them."""
