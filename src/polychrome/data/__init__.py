"""Datasets: read sources safely, clean them, feed training.

The dataset store (import, list, show, resolve, export, remove) is
`polychrome.persistence.datasets`; the training cache and loader live in
`polychrome.data.cache` / `polychrome.data.loader`.
"""
