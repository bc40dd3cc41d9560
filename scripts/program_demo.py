"""A program report from the demo's store, with worklists backdated so that outcomes exist.

The demo's nightly run flags women today, so none has come for DXA yet. This
script writes four worklists into the demo store as if the program had run
540, 480, 420 and 360 days ago (the same model and threshold), records
coordinator actions for some of the women, and leaves the outcomes to the
cohort's own DXA table: synthetic women whose DXA came after such a flag.
Then ``osteo-batch report`` has something to show. Use a copy of a demo
folder: this writes made-up runs into its store.

Usage: .venv/bin/python scripts/program_demo.py DEMO_COPY && .venv/bin/osteo-batch report --workdir DEMO_COPY --month YYYY-MM
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from pathlib import Path


def main(workdir: str) -> None:
    from osteo_batch import pipeline
    from osteo_batch.models.model import load_model_dir
    from osteo_batch.followup.referrals import new_referral, record
    from osteo_batch.worklist import write_worklist

    work = Path(workdir)
    s = pipeline.load_settings(None, workdir=work, model_dir=work / "models" / "demo")
    m = load_model_dir(s.model_dir)
    rng = random.Random(7)
    with pipeline.open_store(s) as st:
        for k, days_ago in enumerate((540, 480, 420, 360)):
            day = dt.date.today() - dt.timedelta(days=days_ago)
            run_id = f"backdated-{k}"
            write_worklist(st, workdir=work, run={"run_id": run_id}, model_id=m.model_id,
                           threshold=m.config.threshold, bands=m.config.bands, as_of=day)
            pids = [r[0] for r in st.con.execute("SELECT patient_id FROM worklist_entries WHERE run_id = ?",
                                                 [run_id]).fetchall()]
            acted = [p for p in pids if rng.random() < 0.6]
            record(st, [new_referral(p, rng.choice(["contacted", "referred", "unreachable"]), by_user="demo",
                                     acted_at=dt.datetime.combine(day + dt.timedelta(days=rng.randint(1, 20)),
                                                                  dt.time(10)))
                        for p in acted])
            print(f"{run_id}: as of {day}, {len(pids)} listed, {len(acted)} acted on")


if __name__ == "__main__":
    main(*sys.argv[1:])
