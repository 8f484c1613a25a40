"""`polychrome data ...`: import, list, show, preview, export, remove datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import echo, emit_json, json_option
from .main import app

version_option = click.option("--version", "version", type=int, default=None,
                              help="Dataset version (default: the latest).")


@app.group("data")
def data_group() -> None:
    """Import image collections (one folder per style) and manage datasets."""


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


@data_group.command("import")
@click.argument("src")
@click.option("--name", required=True, help="Dataset name; importing it again adds a version.")
@click.option("--min-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Drop images whose shorter side is below this many pixels.")
@json_option
def import_cmd(src: str, name: str, min_size: int, as_json: bool) -> None:
    """Import SRC: a folder, .zip or .tar(.gz) with one sub-folder per style."""
    from tqdm import tqdm

    from ..persistence.datasets import import_dataset

    bar = tqdm(desc=f"importing {name}", unit="file", file=sys.stderr,
               disable=as_json or not sys.stderr.isatty())

    def progress(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        result = import_dataset(src, name, min_size=min_size, progress=progress)
    finally:
        bar.close()
    if as_json:
        emit_json(result)
        return
    rejected = {k: v for k, v in result["rejected"].items() if v}
    echo(f"imported {result['name']} version {result['version']}: {result['images']} images "
         f"in {len(result['domains'])} domains ({_counts(result['domains'])})")
    echo(f"rejected: {_counts(rejected)}"
         + (f"  (details: polychrome data show {name} --report)" if rejected else ""))


@data_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List datasets with their versions."""
    from ..persistence.datasets import list_datasets

    datasets = list_datasets()
    if as_json:
        emit_json({"datasets": datasets})
        return
    if not datasets:
        echo("no datasets yet: polychrome data import SRC --name NAME")
    for d in datasets:
        versions = ",".join(str(v) for v in d["versions"])
        echo(f"{d['name']}  v{d['latest_version']} (versions {versions})  {d['images']} images  "
             f"{len(d['domains'])} domains: {', '.join(d['domains'])}")


@data_group.command("show")
@click.argument("name")
@version_option
@click.option("--report", "with_report", is_flag=True,
              help="Also list every rejected file with its reason.")
@json_option
def show_cmd(name: str, version: int | None, with_report: bool, as_json: bool) -> None:
    """Counts per style, image sizes, source and rejections of a dataset version."""
    from ..persistence.datasets import dataset_report, show_dataset

    info = show_dataset(name, version)
    report = dataset_report(name, info["version"]) if with_report else None
    if as_json:
        emit_json({**info, "report": report} if with_report else info)
        return
    echo(f"{info['name']} version {info['version']} (versions {info['versions']})")
    echo(f"  path:     {info['path']}")
    echo(f"  source:   {info['source']}")
    echo(f"  created:  {info['created']} UTC")
    echo(f"  images:   {info['images']}")
    for domain, n in info["domains"].items():
        echo(f"    {domain}: {n}")
    for axis, s in info["sizes"].items():
        echo(f"  {axis + ':':9} min {s['min']}  median {s['median']}  max {s['max']}")
    echo(f"  rejected: {_counts({k: v for k, v in info['rejected'].items() if v})}")
    for entry in report or []:
        if entry["status"] != "imported":
            echo(f"    {entry['status']:<11} {entry['source_name']}: {entry['detail']}")


@data_group.command("preview")
@click.argument("name")
@version_option
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
@click.option("--per-domain", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--cell", type=click.IntRange(min=8, max=1024), default=64, show_default=True,
              help="Cell size in pixels.")
@json_option
def preview_cmd(name: str, version: int | None, out: str, per_domain: int, cell: int,
                as_json: bool) -> None:
    """Write a labelled grid: one row per style."""
    from ..data.preview import write_preview

    path = write_preview(name, version, per_domain, cell, out=out)
    if as_json:
        emit_json({"path": str(path)})
    else:
        echo(f"wrote {path}")


@data_group.command("export")
@click.argument("name")
@version_option
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="Zip file (or folder) to write.")
@json_option
def export_cmd(name: str, version: int | None, out: str, as_json: bool) -> None:
    """Write a re-importable zip backup (one folder per style plus the manifest)."""
    from ..persistence.datasets import export_dataset

    path = export_dataset(name, Path(out), version)
    if as_json:
        emit_json({"path": str(path)})
    else:
        echo(f"wrote {path}")


@data_group.command("remove")
@click.argument("name")
@version_option
@json_option
def remove_cmd(name: str, version: int | None, as_json: bool) -> None:
    """Remove a dataset version (or, without --version, all versions). No questions asked."""
    from ..persistence.datasets import remove_dataset

    removed = remove_dataset(name, version)
    if as_json:
        emit_json({"name": name, "removed": removed})
    else:
        echo(f"removed {name} version{'s' if len(removed) > 1 else ''} "
             f"{', '.join(map(str, removed))}")
