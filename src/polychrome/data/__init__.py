"""Datasets: import sources safely, clean, index and store them; feed training.

The store's public API is re-exported here; the training cache and loader live in
`polychrome.data.cache` / `polychrome.data.loader`.
"""

from .store import (
    DatasetRef,
    dataset_report,
    export_dataset,
    import_dataset,
    list_datasets,
    remove_dataset,
    resolve_dataset,
    show_dataset,
)

__all__ = [
    "DatasetRef",
    "dataset_report",
    "export_dataset",
    "import_dataset",
    "list_datasets",
    "remove_dataset",
    "resolve_dataset",
    "show_dataset",
]
