"""The model study as a Prefect flow: one task per model of the grid, then the report.

Orchestration only: every task wraps one call of ``osteo_batch.study``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from osteo_batch import study
from osteo_batch.run.nightly import index_archive
from osteo_batch.settings import Settings, load_settings


@task(name="train-model", task_run_name="train-{entry.name}")
def train_model(settings: Settings, entry: study.GridEntry, out: str, truth: str | None,
                masks: str | None) -> dict[str, Any]:
    return study.train_entry(settings, entry, out=Path(out), truth_csv=Path(truth) if truth else None,
                             masks=Path(masks) if masks else None)


@flow(name="model_study")
def model_study(archive: str | None, dxa_csv: str, out: str, grid: list[study.GridEntry], truth: str | None = None,
                masks: str | None = None, workers: int = 2, pacs: str | None = None, since: str | None = None,
                calling_aet: str | None = None) -> str:
    """Index the archive (a folder, or a PACS) and the DXA table once, train every model of the grid, write the report."""
    log = get_run_logger()
    from osteo_batch.pacs.config import parse_since

    settings = load_settings(None, workdir=out, archive=archive, dxa_csv=dxa_csv, workers=workers, pacs_url=pacs,
                             since=parse_since(since) if since else None, calling_aet=calling_aet)
    index_archive(settings, load_dxa=True)
    rows = []
    for entry in grid:
        row = train_model(settings, entry, out, truth, masks)
        log.info("%s: AUC %.3f, IoU_bone %s, Δbone %s", entry.name, row["auc"], row["iou_bone"], row["delta_bone"])
        rows.append(row)
    return str(study.write_report(Path(out), rows, grid=grid, source=Path(archive).name if archive else settings.source))
