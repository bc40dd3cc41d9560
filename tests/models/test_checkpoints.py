"""A training run killed with SIGKILL after an epoch resumes from its checkpoint and ends
with exactly the model an uninterrupted run makes."""

import os
import signal
import subprocess
import sys
import textwrap

from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from osteo_batch import pipeline
    from osteo_batch.models.train import TrainConfig, train

    archive, dxa, work, out, kill_after = sys.argv[1:6]
    s = pipeline.load_settings(None, workdir=work, archive=archive, dxa_csv=dxa, workers=0)
    pipeline.load_dxa_stage(pipeline.RunContext.for_index(s, "t"))
    pipeline.sweep_stage(pipeline.RunContext.for_index(s, "t"))

    def progress(epoch, total, loss):
        print(epoch, flush=True)
        if epoch == int(kill_after):
            time.sleep(120)  # killed here, after the checkpoint of this epoch

    with pipeline.open_store(s, read_only=True) as st:
        train(st, out, TrainConfig(epochs=3, workers=0, seed=3), progress=progress)
    print("done", flush=True)
    """
)


def _run(args, kill_after=None):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args), str(kill_after or 0)],
                         stdout=subprocess.PIPE, text=True)
    epochs = []
    for line in p.stdout:
        if line.strip() == "done":
            break
        epochs.append(int(line))
        if kill_after and epochs[-1] == kill_after:
            os.kill(p.pid, signal.SIGKILL)
            break
    p.wait(timeout=120)
    return p.returncode, epochs


def test_killed_training_resumes_and_matches_an_uninterrupted_run(cohort_dir, tmp_path):
    a, d = cohort_dir.archive, cohort_dir.dxa_csv
    rc, epochs = _run([a, d, tmp_path / "w1", tmp_path / "straight"])
    assert rc == 0 and epochs == [1, 2, 3]

    rc, epochs = _run([a, d, tmp_path / "w2", tmp_path / "resumed"], kill_after=1)
    assert rc == -signal.SIGKILL and epochs == [1]
    assert (tmp_path / ".resumed.checkpoint" / "meta.json").is_file()
    rc, epochs = _run([a, d, tmp_path / "w2", tmp_path / "resumed"])
    assert rc == 0 and epochs == [2, 3], "the second run starts after the checkpointed epoch"
    assert not (tmp_path / ".resumed.checkpoint").exists()

    w1 = load_file(str(tmp_path / "straight" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    assert all((w1[k] == w2[k]).all() for k in w1)
