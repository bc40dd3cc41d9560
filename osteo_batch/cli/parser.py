"""The command line's grammar: every command, flag, default and help text, and the argument types.

Each sub-command names its function (``fn``) in :mod:`osteo_batch.cli.run`,
:mod:`osteo_batch.cli.followup`, :mod:`osteo_batch.cli.models` or :mod:`osteo_batch.cli.estimate`; those import
their libraries lazily, so building the parser (``--help``) loads no torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from osteo_batch.cli import estimate, followup, models, run
from osteo_batch.models.labels import SITES

DEFAULT_WORKDIR = "osteo-work"
EPILOG = "Screening aid, not a diagnosis: DXA confirms osteoporosis, and a low score never rules it out."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _existing(kind: str):
    """argparse type: a path that must exist as a 'directory' or a 'file'."""
    test = Path.is_dir if kind == "directory" else Path.is_file

    def check(value: str) -> Path:
        if not test(Path(value)):
            raise argparse.ArgumentTypeError(f"{value}: no such {kind}")
        return Path(value)

    return check


def _probability(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a number") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"{value}: must be between 0 and 1")
    return x


def _at_least(lo: int):
    """argparse type: a whole number >= ``lo``."""
    def check(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value}: not a whole number") from None
        if n < lo:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {lo}")
        return n

    return check


def _positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a number") from None
    if not 0.0 < x <= 24.0:
        raise argparse.ArgumentTypeError(f"{value}: must be more than 0 and at most 24 hours")
    return x


def _month(value: str) -> str:
    """argparse type: a calendar month as YYYY-MM."""
    import datetime as dt

    try:
        dt.date.fromisoformat(f"{value}-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value}: not a month; use YYYY-MM, like 2026-11") from None
    if len(value) != 7:
        raise argparse.ArgumentTypeError(f"{value}: not a month; use YYYY-MM, like 2026-11")
    return value


def _date(value: str):
    """argparse type: a day as YYYY-MM-DD."""
    from osteo_batch.pacs.config import PacsConfigError, parse_since

    try:
        return parse_since(value)
    except PacsConfigError:
        raise argparse.ArgumentTypeError(f"{value}: not a date; use YYYY-MM-DD, like 2024-01-01") from None


def synth_seed() -> int:
    from osteo_batch.synth.cohort import CohortSpec

    return CohortSpec.seed


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="osteo-batch",
        description="Nightly osteoporosis screening of archived chest radiographs: sweep, score, explain, refer.",
        epilog=EPILOG,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(sp, *, archive: bool = False):
        sp.add_argument("--workdir", type=Path, default=Path(os.environ.get("OSTEO_BATCH_WORKDIR", DEFAULT_WORKDIR)),
                        help=f"folder for the store, scores, heat maps and worklists (default: {DEFAULT_WORKDIR})")
        if archive:  # exactly one source: a folder or a PACS (or the config file's [archive] path / [pacs] url)
            src = sp.add_mutually_exclusive_group()
            src.add_argument("--archive", type=_existing("directory"), help="the DICOM archive to sweep (a folder)")
            src.add_argument("--pacs", metavar="URL",
                             help="the archive is a PACS: http(s)://HOST:PORT/PATH (DICOMweb) or "
                                  "dimse://CALLED_AET@HOST:PORT (DIMSE); credentials come from the environment "
                                  "variable OSTEO_PACS_CREDENTIALS or [pacs] credentials_file, never a flag")
            sp.add_argument("--since", type=_date, metavar="YYYY-MM-DD",
                            help="PACS: the backlog's first study date (needed on the first night; later nights "
                                 "resume where the last complete query ended)")
            sp.add_argument("--calling-aet", default=None, help="PACS over DIMSE: our AE title (default: OSTEO)")

    d = sub.add_parser("demo", help="write a synthetic archive, train the demo model, run the nightly flow",
                       description="End to end on synthetic phantoms: archive, DXA table, model, nightly flow, worklist.",
                       epilog=EPILOG)
    d.add_argument("--workdir", type=Path, default=Path("demo-run"), help="where to put everything (default: demo-run)")
    d.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (default: 8)")
    d.add_argument("--seed", type=int, default=synth_seed(), help="cohort seed (default: fixed)")
    d.add_argument("--workers", type=int, default=2, help="decode worker processes (default: 2)")
    d.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    d.set_defaults(fn=models.cmd_demo)

    s = sub.add_parser("sweep", help="index the archive only (eligible, unscored files are 'pending')",
                       description="Walk the archive, read headers, record every file's status in the store.")
    common(s, archive=True)
    s.add_argument("--config", type=_existing("file"), help="TOML with [run] settings and/or [[rule]] eligibility rules")
    s.add_argument("--workers", type=int, default=None, help="header-reading processes (default: 2)")
    s.set_defaults(fn=run.cmd_sweep)

    r = sub.add_parser("run", help="one nightly run: sweep, score, explain, worklist (a Prefect flow)",
                       description="One nightly run as the Prefect flow nightly_screening, on a local ephemeral server "
                                   "unless PREFECT_API_URL points at one.", epilog=EPILOG)
    common(r, archive=True)
    r.add_argument("--model", type=_existing("directory"), help="model folder (default: WORKDIR/models/demo)")
    r.add_argument("--dxa", type=_existing("file"), help="DXA table (CSV) to load; later runs keep it")
    r.add_argument("--config", type=_existing("file"), help="TOML with [run] settings and/or [[rule]] eligibility rules")
    r.add_argument("--workers", type=int, default=None, help="decode worker processes (default: 2)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: 16 on CPU, 128 on CUDA, halved when memory runs out)")
    r.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:1 ...")
    r.add_argument("--threads", type=int, default=None,
                   help="the model's intra-op threads while scoring (default: the cores other processes leave free, "
                        "less the decode workers' share)")
    r.add_argument("--shards", type=int, default=None,
                   help="split scoring into N shards, one process each (0: one per visible GPU; default: 1)")
    r.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run each shard as a task on a Ray cluster (ray://HEAD:10001; no address: a local cluster)")
    r.add_argument("--shard-deployment", metavar="FLOW/DEPLOYMENT",
                   help="run each shard as a run of this score_shard deployment on a Prefect work pool")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slow start, faster backlog)")
    r.add_argument("--no-prefect", action="store_true", help="run the stages in-process without Prefect")
    r.add_argument("--send-results", action="store_true",
                   help="store one DICOM SR per scored image back to the source PACS (STOW-RS or C-STORE)")
    r.add_argument("--allow-phantom-results", action="store_true",
                   help="send results even from a model trained on phantoms or random weights (test PACSes only)")
    r.add_argument("--fhir", metavar="URL", help="POST the run's FHIR Bundle of RiskAssessments to this FHIR server")
    r.set_defaults(fn=run.cmd_run)

    e = sub.add_parser("estimate", help="time a sample of the backlog with the run's model: wall time, disk, nights",
                       description="Sweep the source as `run` does, then score a seeded sample of the pending images "
                                   "and draw some heat maps with the run's model and settings (writing no scores), "
                                   "and print the backlog's expected wall time, disk, nights, and what more cores, "
                                   "Ray shards or a GPU would change. The table is recorded in the store.",
                       epilog=EPILOG)
    common(e, archive=True)
    e.add_argument("--model", type=_existing("directory"), help="model folder (default: WORKDIR/models/demo)")
    e.add_argument("--config", type=_existing("file"), help="TOML with [run] settings and/or [[rule]] eligibility rules")
    e.add_argument("--workers", type=int, default=None, help="decode worker processes, as for run (default: 2)")
    e.add_argument("--batch-size", type=int, default=None, help="images per batch, as for run")
    e.add_argument("--threads", type=int, default=None, help="the model's intra-op threads, as for run")
    e.add_argument("--device", default=None, help="torch device, as for run: cpu (default), cuda, cuda:1 ...")
    e.add_argument("--sample", type=_at_least(1), default=None,
                   help="pending images to score (default: enough for two steady batches, at least 48)")
    e.add_argument("--seed", type=int, default=0, help="the sample's seed (default: 0)")
    e.add_argument("--heatmaps", type=_at_least(1), default=None,
                   help="heat maps to draw from the sample (default: the explain stage's warm batches and two more)")
    e.add_argument("--window-hours", type=_positive, default=None, metavar="H",
                   help="the nightly window (default: the length of [pacs] hours, else 8)")
    e.add_argument("--cores", type=_at_least(1), default=16, metavar="N",
                   help="what-if: a machine of this CPU with N cores (default: 16)")
    e.add_argument("--shards", type=_at_least(1), default=4, metavar="N",
                   help="what-if: N Ray shards, each a machine like this one (default: 4)")
    e.add_argument("--json", action="store_true", help="print JSON instead of the table")
    e.set_defaults(fn=estimate.cmd_estimate)

    w = sub.add_parser("worklist", help="re-render the latest run's worklist (the store is opened read-only)",
                       epilog=EPILOG)
    common(w)
    w.add_argument("--threshold", type=_probability, default=None,
                   help="list patients at or above P; 0 lists every scored eligible patient not excluded")
    w.add_argument("--model", type=_existing("directory"), help="model folder (default: the one the run used)")
    w.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a store held by a run (default: 60)")
    w.add_argument("--config", type=_existing("file"), help="TOML with [worklist] exclusions and [sites]")
    w.set_defaults(fn=followup.cmd_worklist)

    t = sub.add_parser("train", help="fine-tune a model (LoRA) on archive images paired with DXA",
                       description="Pairs eligible images with DXA within 180 days, splits by patient, fine-tunes with "
                                   "LoRA, evaluates, and writes MODEL_DIR with its card.")
    common(t, archive=True)
    t.add_argument("--dxa", type=_existing("file"), required=True, help="DXA table (CSV)")
    t.add_argument("--out", type=Path, required=True, help="model folder to write")
    t.add_argument("--backbone", default="dinov2_tiny_demo", help="backbone name (default: dinov2_tiny_demo)")
    t.add_argument("--weights", type=Path, help="local .safetensors backbone weights (never downloaded)")
    t.add_argument("--strategy", choices=("lora", "linear", "full"), default="lora",
                   help="LoRA adapters (default), linear probe on a frozen backbone, or full fine-tune")
    t.add_argument("--masks", type=_existing("directory"),
                   help="folder of <SOP Instance UID>.png bone masks: reports Δbone and IoU_bone on the card")
    t.add_argument("--marker-masks", type=_existing("directory"),
                   help="folder of <SOP Instance UID>.png side-marker masks: reports the heat on the marker")
    t.add_argument("--calibration", choices=("platt", "isotonic"),
                   help="fit this calibration, the threshold and the bands on part of the held-out women; "
                        "every figure on the card then comes from the rest (a test split)")
    t.add_argument("--label-sites", default=",".join(SITES),
                   help="DXA sites whose minimum T-score sets the WHO label (default: all three)")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--truth", type=_existing("file"), help="synthetic cohorts: truth.csv, to report the ceiling")
    t.add_argument("--config", type=_existing("file"), help="TOML with [[rule]] eligibility rules")
    t.set_defaults(fn=models.cmd_train)

    c = sub.add_parser("calibrate", help="recalibrate a model on a site's own image-DXA pairs (no retraining)",
                       description="Fits Platt or isotonic calibration and a new threshold on the site's pairs and "
                                   "writes a new model version beside the old one; the card keeps the history.")
    common(c, archive=True)
    c.add_argument("--model", type=_existing("directory"), required=True)
    c.add_argument("--dxa", type=_existing("file"), required=True)
    c.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    c.add_argument("--out", type=Path, help="new model folder (default: MODEL-METHOD-YYYYMMDD)")
    c.add_argument("--window-days", type=int, default=180, help="image-DXA pairing window (default: 180)")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--config", type=_existing("file"), help="TOML with [[rule]] eligibility rules")
    c.set_defaults(fn=models.cmd_calibrate)

    y = sub.add_parser("study", help="train a grid of backbone x strategy models and compare them (a Prefect flow)",
                       description="The SNUH protocol on your pairs: every model of --grid on the same patient split; "
                                   "writes OUT/report.json and OUT/report.html.")
    y.add_argument("--out", type=Path, required=True, help="folder for the store, models and report")
    y.add_argument("--demo", action="store_true", help="use a seeded synthetic cohort and the 3-strategy demo grid")
    ysrc = y.add_mutually_exclusive_group()
    ysrc.add_argument("--archive", type=_existing("directory"), help="the DICOM archive (a folder)")
    ysrc.add_argument("--pacs", metavar="URL", help="the archive is a PACS (as for run: DICOMweb or dimse://)")
    y.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="PACS: the first study date to index")
    y.add_argument("--calling-aet", default=None, help="PACS over DIMSE: our AE title (default: OSTEO)")
    y.add_argument("--dxa", type=_existing("file"))
    y.add_argument("--grid", type=_existing("file"), help="TOML with [[model]] backbone/strategy/weights/epochs")
    y.add_argument("--truth", type=_existing("file"), help="synthetic cohorts: truth.csv, for the ceiling")
    y.add_argument("--masks", type=_existing("directory"), help="bone masks, for Δbone and IoU_bone")
    y.add_argument("--epochs", type=int, default=None, help="demo grid: epochs per model (default: 8)")
    y.add_argument("--workers", type=int, default=2)
    y.set_defaults(fn=models.cmd_study)

    v = sub.add_parser("serve", help="serve the nightly flow on a cron schedule (needs `prefect server start`)")
    common(v, archive=True)
    v.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: 02:00 every night)")
    v.add_argument("--model", type=_existing("directory"))
    v.add_argument("--dxa", type=_existing("file"))
    v.add_argument("--config", type=_existing("file"))
    v.set_defaults(fn=run.cmd_serve)

    rf = sub.add_parser("refer", help="record what a coordinator did for a patient (append-only)")
    common(rf)
    rf.add_argument("patient_id", help="the patient's ID as on the worklist")
    rf.add_argument("--status", required=True, choices=("contacted", "referred", "declined", "unreachable", "dxa-done"))
    rf.add_argument("--note", help="free text, kept with the action")
    rf.add_argument("--by", help="who did it (default: your login name)")
    rf.add_argument("--wait", type=float, default=10.0,
                    help="seconds to wait for a store held by a nightly run before queueing the change (default: 10)")
    rf.set_defaults(fn=followup.cmd_refer)

    oc = sub.add_parser("outcomes", help="match DXA results to flagged patients: uptake, yield, time to DXA")
    common(oc)
    oc.add_argument("--dxa", type=_existing("file"), help="new DXA results to load first (the usual CSV format)")
    oc.add_argument("--follow-up-days", type=int, default=365, help="DXA counted up to this long after the flag")
    oc.add_argument("--json", action="store_true", help="print JSON instead of tables")
    oc.set_defaults(fn=followup.cmd_outcomes)

    rp = sub.add_parser("report", help="write the monthly program report (HTML, with trend plots)")
    common(rp)
    rp.add_argument("--month", type=_month, help="YYYY-MM (default: this month)")
    rp.add_argument("--dxa", type=_existing("file"), help="new DXA results to load first")
    rp.add_argument("--follow-up-days", type=int, default=365)
    rp.set_defaults(fn=followup.cmd_report)

    ds = sub.add_parser("deploy-shards", help="deploy the score_shard flow to a Prefect work pool (needs a Prefect server)")
    ds.add_argument("--pool", required=True, help="work pool name (create it with `prefect work-pool create NAME --type process`)")
    ds.add_argument("--name", default="gpu", help="deployment name (default: gpu)")
    ds.set_defaults(fn=run.cmd_deploy_shards)
    return p
