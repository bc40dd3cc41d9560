"""CPU runtimes for the full-size backbone: is anything faster than torch fp32 where bf16 is not native?

DINOv2-S/14 at 518 px (``dinov2_small``, built as the product builds it) on the
CPU at batch 4 and 8, in one process, interleaved and repeated: torch fp32
(today's path), bf16 autocast and dynamic int8 Linear layers; ONNX Runtime fp32
and dynamic int8; OpenVINO with ``INFERENCE_PRECISION_HINT`` f32, with its
default hint (bf16 where the CPU has it), and int8 weights where nncf is
installed. Each gets images/s (median of rounds), ``drift`` (the largest
|softmax probability| difference from torch fp32 on the same inputs) and its
one-off cost: export, quantisation or conversion (``prep``) and load or compile.

It runs twice, in subprocesses: natively, and as an AVX2-only CPU, emulated by
capping the libraries' ISA dispatch (``AVX2_ENV``). The cap binds torch (ATen,
oneDNN, MKL; FBGEMM for int8) but not ONNX Runtime, whose MLAS picks kernels
from CPUID with no runtime cap (onnxruntime/core/mlas/lib/platform.cpp): it is
not measured there. OpenVINO 2026.4 honours ``OV_CPU_MAX_ISA`` (without it only
its oneDNN primitives are capped, its default hint still picks bf16 and
compiling fails), but may run its fully connected layers on MLAS: the kernels
that ran are read from the compiled model, and a figure past AVX2 is marked
not measurable.

Inputs: synthetic phantoms (``osteo_batch.synth``) decoded and normalised as
scoring does. Weights are random (seeded), LayerScale set to 1 as in the demo
backbone: at timm's 1e-5 a random DINOv2 gives every image the same logits,
and every drift would read 0.

On a shared machine figures are noisy: runtimes are interleaved within a round,
their order rotated between rounds; images/s is the median of rounds, and
"x fp32" the median of each round's ratio to torch fp32 (paired, so a change
of load between rounds cancels). A path under half torch fp32's rate at
warm-up is not timed further.

Usage: python benchmarks/cpu_runtimes.py [--quick] [--batches 4,8] [--rounds 3] [--threads N] [--modes native,avx2]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: an AVX2-only CPU, as far as the libraries' dispatchers can be told so
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "OV_CPU_MAX_ISA": "AVX2"}
#: the drift a fast path may add (the issue's bound for bf16 on trained models)
MAX_DRIFT = 0.005
#: a path below this fraction of torch fp32's rate at warm-up is not timed further
SLOW = 0.5
#: primitive types that show OpenVINO ran past an AVX2 cap (MLAS: CPUID-dispatched)
PAST_AVX2 = ("avx512", "amx", "mlas")
BACKBONE = "dinov2_small"
PATHS = ("torch_fp32", "torch_bf16", "torch_int8", "ort_fp32", "ort_int8", "ov_f32", "ov_default", "ov_int8w")


def prepare(work: Path, n_images: int) -> dict:
    """Inputs, model folder, ONNX (fp32, int8) and OpenVINO IR, once for both runs; returns their costs."""
    import numpy as np
    import torch

    from osteo_batch.dicom.display import DisplayOptions
    from osteo_batch.models.model import ModelConfig, build_module, normalise, save_model_dir
    from osteo_batch.scoring.tensors import DicomDataset, Item, collate
    from osteo_batch.synth.cohort import CohortSpec, write_cohort

    cfg = ModelConfig.for_backbone(BACKBONE)
    spec = CohortSpec(n_women=n_images, n_men=0, n_young=0, n_lateral=0, n_followups=0, n_unreadable=0, seed=99)
    cohort = write_cohort(work / "cohort", spec, workers=os.cpu_count() or 1)
    items = [Item(str(cohort.archive / p.filename), p.sop_instance_uid, p.patient_id) for p in cohort.plans]
    ds = DicomDataset(items, cfg.img_size, DisplayOptions())
    _, x, _ = collate([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    n_noise = n_images - len(x)  # phantoms that would not decode are made up with noise, and counted
    if n_noise:
        x = torch.cat([x.reshape(-1, 1, cfg.img_size, cfg.img_size), torch.rand(n_noise, 1, cfg.img_size, cfg.img_size)])
    np.save(work / "inputs.npy", normalise(x.float(), cfg).contiguous().numpy())

    module = build_module(cfg).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".gamma"):  # LayerScale, see the module docstring
                p.fill_(1.0)
    save_model_dir(module, cfg, work / "model")
    prep = {"inputs": f"{n_images - n_noise} decoded phantoms" + (f", {n_noise} noise images" if n_noise else "")}

    t = time.perf_counter()
    prep["exporter"], prep["export_error"] = export_onnx(module, work / "model.onnx", cfg.img_size)
    prep["export_s"] = round(time.perf_counter() - t, 1)

    def ort_int8():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(work / "model.onnx"), str(work / "model.int8.onnx"), weight_type=QuantType.QInt8)

    def ov_ir():
        import openvino as ov

        ov.save_model(ov.convert_model(str(work / "model.onnx")), str(work / "model.xml"), compress_to_fp16=False)

    for key, step in (("ort_int8_quant", ort_int8), ("ov_convert", ov_ir)):
        t = time.perf_counter()
        try:
            step()
        except Exception as e:  # reported; the path then reports its own load error
            prep[key + "_error"] = _first_line(e)
        prep[key + "_s"] = round(time.perf_counter() - t, 1)
    return prep


def export_onnx(module, out: Path, img_size: int) -> tuple[str, str | None]:
    """torch.onnx.export with a dynamic batch: the default exporter first, the TorchScript one if it fails."""
    import torch

    x = torch.zeros(1, 3, img_size, img_size)
    first_error = None
    try:
        batch = torch.export.Dim("batch", min=1, max=256)
        torch.onnx.export(module, (x,), str(out), input_names=["x"], output_names=["logits"], opset_version=18,
                          dynamic_shapes=({0: batch},), external_data=False)
        return "dynamo (opset 18)", None
    except Exception as e:
        first_error = f"default exporter: {_first_line(e)}"
    torch.onnx.export(module, (x,), str(out), input_names=["x"], output_names=["logits"], opset_version=17,
                      dynamo=False, dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return "torchscript, dynamo=False (opset 17)", first_error


def build_paths(work: Path, threads: int, avx2: bool) -> tuple[dict, dict]:
    """Each runtime as ``f(x) -> probabilities`` on a normalised (N, 3, H, W) float32 array, and what is known of it.

    Under the AVX2 cap a path whose library ignores the cap is not built (ONNX
    Runtime), or is checked after its first run (OpenVINO picks its kernels per
    shape, at run time): ``f.isa`` then says whether it kept to AVX2.
    """
    import numpy as np
    import torch

    from osteo_batch.models.model import load_model_dir

    def softmax(z):
        z = np.asarray(z, dtype=np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    fp32_module = functools.cache(lambda: load_model_dir(work / "model").module)  # one load for the torch paths

    def on_torch(kind: str):
        def build():
            module = fp32_module()
            if kind == "int8":
                module = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)

            def f(x):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
                    return softmax(module(torch.from_numpy(x)).float().numpy())
            return f, {}
        return build

    def ort(file: str):
        def build():
            if avx2:
                raise RuntimeError("not measurable here: MLAS picks kernels by CPUID, no ISA cap")
            import onnxruntime as rt

            so = rt.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no spinning into the next path's turn
            s = rt.InferenceSession(str(work / file), so, providers=["CPUExecutionProvider"])
            name = s.get_inputs()[0].name
            return (lambda x: softmax(s.run(None, {name: x})[0])), {}
        return build

    def ov(hint: str | None, compress: bool = False):
        def build():
            import openvino

            if compress and importlib.util.find_spec("nncf") is None:
                raise RuntimeError("skipped: nncf is not installed")
            core = openvino.Core()
            model = core.read_model(str(work / "model.xml"))
            model = importlib.import_module("nncf").compress_weights(model) if compress else model
            cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            if hint:
                cfg["INFERENCE_PRECISION_HINT"] = hint
            compiled = core.compile_model(model, "CPU", cfg)
            precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            if hint is None and precision == "f32" and "ov_f32" in fns:
                raise RuntimeError("same as ov_f32: the default hint resolved to f32")
            req = compiled.create_infer_request()
            f = lambda x: softmax(np.array(req.infer({0: x})[0]))  # noqa: E731 (an attribute is set on it below)

            def isa() -> dict:  # after a run: the kernels actually chosen
                kinds = {str(op.get_rt_info()["primitiveType"].astype(str)) for op in compiled.get_runtime_model().get_ops()
                         if "primitiveType" in op.get_rt_info()}
                past = sorted(k for k in kinds if any(s in k.lower() for s in PAST_AVX2))
                return {"isa_valid": not past,
                        "isa_note": f"not measurable here: ran {', '.join(past)}" if past else "kept to AVX2"}
            f.isa = isa if avx2 else None
            return f, {"precision": precision}
        return build

    builders = {"torch_fp32": on_torch("fp32"), "torch_bf16": on_torch("bf16"), "torch_int8": on_torch("int8"),
                "ort_fp32": ort("model.onnx"), "ort_int8": ort("model.int8.onnx"),
                "ov_f32": ov("f32"), "ov_default": ov(None), "ov_int8w": ov("f32", compress=True)}
    cap = torch.backends.cpu.get_cpu_capability()
    fns, info = {}, {}
    for name, build in builders.items():
        t = time.perf_counter()
        try:
            fns[name], info[name] = build()
            info[name]["load_s"] = round(time.perf_counter() - t, 1)
            if name.startswith("torch") and avx2:
                info[name].update(isa_valid=cap == "AVX2", isa_note=f"torch capability {cap}")
        except Exception as e:
            info[name] = {"error": _first_line(e)}
        _say(f"  {name}: {info[name]}")
    return fns, info


def measure(work: Path, batches: list[int], rounds: int, threads: int, avx2: bool, warm_bs: int | None) -> dict:
    """Warm up every path, then time interleaved rounds; drift from each path's outputs on the same inputs.

    ``warm_bs``: the batch of the warm-up call (None: each timed batch). A path
    under SLOW x torch fp32 at warm-up, or whose library ran past the ISA cap,
    is not timed further: its figure is the warm-up's, with 0 rounds.
    """
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    x = np.load(work / "inputs.npy")
    fns, info = build_paths(work, threads, avx2)
    probs, warm = {}, {}

    def call(name: str, bs: int) -> float:
        t = time.perf_counter()
        probs[name, bs] = fns[name](x[:bs])
        return bs / (time.perf_counter() - t)

    active = {(n, bs) for n in fns for bs in batches}
    for bs in ([warm_bs] if warm_bs else batches):
        for name in list(fns):
            if warm_bs is None and (name, bs) not in active:
                continue
            try:
                warm[name, bs] = call(name, bs)
            except Exception as e:  # a path that compiles but does not run is reported, not fatal
                info[name]["error"] = _first_line(e)
                del fns[name]
                continue
            if getattr(fns[name], "isa", None):
                info[name].update(fns[name].isa())
        if "torch_fp32" not in fns:
            raise SystemExit("torch fp32, the reference, did not run")
        for name in fns:
            if (name, bs) in warm and (not info[name].get("isa_valid", True)
                                       or warm[name, bs] < SLOW * warm["torch_fp32", bs]):
                active -= {(name, b) for b in batches}
    names = list(fns)
    rates: dict[str, dict[int, list[float]]] = {n: {bs: [] for bs in batches} for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotated: no path always runs first
        for bs in batches:
            for name in order:
                if (name, bs) in active:
                    rates[name][bs].append(call(name, bs))
        _say(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[batches[0]][-1]:.2f}" for n, v in rates.items()
                                                      if v[batches[0]]))
    native_ref = work / "torch_fp32_native.npy"
    if not avx2:
        np.save(native_ref, probs["torch_fp32", max(batches)])
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads, "paths": {}}
    for name in PATHS:
        entry = out["paths"][name] = dict(info.get(name, {}))
        if name not in rates:
            continue
        entry["warmup_ips"] = {str(bs): round(v, 3) for (n, bs), v in warm.items() if n == name}
        entry["warmup_vs_fp32"] = {str(bs): round(v / warm["torch_fp32", bs], 3) for (n, bs), v in warm.items() if n == name}
        timed = {bs: v for bs, v in rates[name].items() if v}  # paired with fp32 round by round: load changes cancel
        entry["ips"] = {str(bs): round(statistics.median(v), 3) for bs, v in timed.items()}
        entry["rounds"] = {str(bs): len(v) for bs, v in rates[name].items()}
        entry["vs_fp32"] = {str(bs): round(statistics.median(a / b for a, b in zip(v, rates["torch_fp32"][bs])), 3)
                            for bs, v in timed.items()}
        entry["drift"] = float(max(np.abs(p - probs["torch_fp32", bs]).max() for (n, bs), p in probs.items() if n == name))
    if avx2 and native_ref.exists():  # how far the AVX2 kernels themselves move fp32
        out["torch_fp32_drift_vs_native"] = float(np.abs(probs["torch_fp32", max(batches)] - np.load(native_ref)).max())
    return out


def winner(run: dict) -> dict:
    """The fastest timed path at the largest batch within MAX_DRIFT whose figure is valid on this ISA (torch fp32 if none)."""
    bs = max(run["paths"]["torch_fp32"]["ips"], key=int)
    ok = {n: p for n, p in run["paths"].items()
          if p.get("rounds", {}).get(bs) and p.get("isa_valid", True) and p["drift"] <= MAX_DRIFT}
    best = max(ok, key=lambda n: ok[n]["vs_fp32"][bs])
    return {"path": best, "batch": int(bs), "vs_fp32": ok[best]["vs_fp32"][bs], "drift": ok[best]["drift"]}


def table(runs: dict, prep: dict, batches: list[int]) -> str:
    """Per run, one row per path: one-off cost, images/s (and x torch fp32) at each batch, drift, and why, if not timed."""
    convert = prep["export_s"] + prep["ov_convert_s"]
    once = {"ort_fp32": prep["export_s"], "ort_int8": prep["export_s"] + prep["ort_int8_quant_s"],
            "ov_f32": convert, "ov_default": convert, "ov_int8w": convert}
    lines = []
    for mode, run in runs.items():
        lines += [f"{mode} ({run['cpu_capability']}, {run['threads']} threads)",
                  f"{'path':12}{'prep s':>7}{'load s':>7}" + "".join(f"{f'b{bs} ips (x fp32)':>17}" for bs in batches)
                  + f"{'drift':>9}  note"]
        for name in PATHS:
            p = run["paths"][name]
            row = f"{name:12}{once.get(name, 0.0):>7.1f}{p.get('load_s', 0.0):>7.1f}"
            if "drift" not in p:
                lines.append(row + f"{'':>{17 * len(batches) + 9}}  {p.get('error', 'not run')}")
                continue
            timed = any(p["rounds"].values())
            row += "".join(f"{p['ips'][str(b)]:>8.2f} ({p['vs_fp32'][str(b)]:.2f}x)" if timed and str(b) in p["ips"]
                           else f"{'-':>17}" for b in batches)
            note = "" if timed else "; ".join(
                [p["isa_note"] if not p.get("isa_valid", True) else f"under {SLOW} x fp32, not timed"]
                + [f"warm-up b{b}: {v:.2f} ({p['warmup_vs_fp32'][b]:.2f}x)" for b, v in p["warmup_ips"].items()])
            lines.append(row + f"{p['drift']:>9.1e}  {note}")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 4 only, one timed round (about 2 minutes on 2 cores)")
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--modes", default="native,avx2", help="which runs: native, avx2 (emulated), or both")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)  # one measuring run, in a subprocess
    args = ap.parse_args()
    batches, rounds = ([4], 1) if args.quick else ([int(b) for b in args.batches.split(",")], args.rounds)

    if args.child:
        avx2 = os.environ.get("ONEDNN_MAX_CPU_ISA") == AVX2_ENV["ONEDNN_MAX_CPU_ISA"]
        res = measure(args.child, batches, rounds, args.threads, avx2, warm_bs=1 if args.quick else None)
        (args.child / ("avx2.json" if avx2 else "native.json")).write_text(json.dumps(res))
        return 0

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="osteo-cpu-runtimes-") as tmp:
        work = Path(tmp)
        prep = prepare(work, max(batches))
        _say(f"prepared in {time.monotonic() - t0:.0f} s: {prep}")
        runs = {}
        for mode in args.modes.split(","):
            env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV} | (AVX2_ENV if mode == "avx2" else {})
            _say(f"{mode}:")
            cmd = [sys.executable, __file__, "--child", str(work), "--batches", ",".join(map(str, batches)),
                   "--rounds", str(rounds), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
            subprocess.run(cmd, env=env, check=True)
            runs[mode] = json.loads((work / f"{mode}.json").read_text())
            runs[mode]["winner"] = winner(runs[mode])
    print(table(runs, prep, batches))
    for mode, run in runs.items():
        w = run["winner"]
        print(f"{mode} ({run['cpu_capability']}): fastest within {MAX_DRIFT} drift at batch {w['batch']}: "
              f"{w['path']}, {w['vs_fp32']:.2f}x torch fp32 (drift {w['drift']:.1e})")
    print(json.dumps({
        "backbone": BACKBONE, "batches": batches, "rounds": rounds, "max_drift": MAX_DRIFT, "prep": prep,
        "runs": runs, "avx2_env": AVX2_ENV, "versions": _versions(), "wall_s": round(time.monotonic() - t0),
    }))
    return 0


def _versions() -> dict:
    from importlib.metadata import distributions

    return {d.metadata["Name"]: d.version for d in distributions()
            if d.metadata["Name"] in ("torch", "timm", "onnx", "onnxruntime", "openvino", "nncf")}


def _first_line(e: BaseException) -> str:
    """The line that says what went wrong (OpenVINO's first lines only name the source files it passed through)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip() and not s.startswith("Exception from")]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
