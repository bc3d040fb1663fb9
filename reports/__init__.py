"""Ranking reports, figures, HTML, DFT input export and DFT validation."""
