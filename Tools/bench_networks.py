#!/usr/bin/env python3
"""Benchmark our GDH encoder against PyTorch and onnxruntime on the same weights.

For every configuration (``--configs``, default ``small,paper``; ``lite0-128`` and
``lite0-224`` are the lite0 configuration at 128 and 224 px with the ImageNet backbone) and thread count
(``--threads``, default ``1,2``) this

1. runs our encoder benchmark::

       .build/release/gdh bench encode --config NAME --bits 64 --threads T --count N \\
           --write-model FILE --json [--check-input CHECK]

   which builds the model with seeded random weights, writes it to FILE in our model
   format (Sources/GDH/Model.swift) and prints one JSON object::

       {"config": str, "image_size": int, "threads": int, "batch": int,
        "image_ms": {"median": float, "mean": float},
        "sketch_ms": {"median": float, "mean": float},
        "images_per_s": float, "sketches_per_s": float,
        "conv_gflops": float, "sgemm_gflops": float, "peak_rss_mb": float}

   ``--check-input CHECK`` is passed only when ``gdh bench encode --help`` lists it: CHECK
   is a safetensors file with F32 tensors ``image`` and ``sketch`` of shape (1, 3, S, S)
   (values in [-1, 1], NCHW); the JSON then also has
   ``"check": {"image_h": [bits floats], "sketch_h": [bits floats]}``, the hash net's
   real outputs H(image) and H(G_I(sketch)) before the sign. Without it the agreement of
   our outputs is reported as n/a.

   If the binary or the subcommand is missing (or a run fails), that is reported and
   the peers still run, on a model with seeded random weights written by
   Tools/gdh_torch.py instead of FILE.
2. loads FILE with Tools/gdh_torch.py and times PyTorch on the CPU
   (``torch.set_num_threads(T)``, ``torch.inference_mode()``, batch 1, warm-up, then N
   timed runs each of H(image) and H(G_I(sketch))), in a subprocess of its own;
3. exports H and H∘G_I to ONNX (opset 17, dynamic batch, TorchScript exporter) and times
   onnxruntime (CPU provider, ``intra_op_num_threads=T``, ``inter_op_num_threads=1``,
   sequential execution, all graph optimisations) on the same inputs, in a subprocess;
4. compares the H outputs of the three for the CHECK inputs (max |difference| against
   PyTorch; percentage of code bits, sign(H) > 0, that agree).

Throughputs are 1000 / median ms per item for the peers (batch 1); ours come from our
JSON as printed. Peak RSS is that of each benchmark process (for the peers it includes
the Python runtime and the framework's libraries).

``--both-coretypes`` runs our side twice: with the environment as it is and with
OPENBLAS_CORETYPE unset (if it is unset already, the second run sets it to
``--coretype``, default Haswell, the value REFERENCE.md reports for these machines). The
peers do not use OpenBLAS and run once.

``--pairs N`` then runs ours and onnxruntime alternately N more times each (A B A B, the
same model file) and reports every pair's images/s ratio, its median and range: on a
machine whose speed drifts between runs, the ratio of a pair holds better than the ratio
of two measurements taken minutes apart.

The Markdown report (machine, date UTC, command, OPENBLAS_CORETYPE, one row per
configuration x threads x our BLAS setting, agreement, errors) is printed and appended to
``--out`` if given; ``--jsonl`` appends the raw results.

Examples (from the repository root)::

    python3 Tools/bench_networks.py
    python3 Tools/bench_networks.py --configs small --threads 1 --count 50
    python3 Tools/bench_networks.py --both-coretypes --out Docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOOLS_DIR.parent
sys.path.insert(0, str(TOOLS_DIR))
from bench_search import emit_report, fmt_ratio, get, machine_info  # noqa: E402  (shared report helpers)
IMAGE_SIZES = {"small": 64, "paper": 256, "lite0-128": 128, "lite0-224": 224}
DEFAULT_COUNT = {"small": 200, "paper": 20, "lite0-128": 100, "lite0-224": 50}
DEFAULT_WARMUP = {"small": 20, "paper": 3, "lite0-128": 10, "lite0-224": 5}


def bench_args(name: str) -> list[str]:
    """`gdh bench encode` options of a configuration name: lite0-S is the lite0
    configuration at S px with the backbone's ImageNet weights (Tools/setup_lite0.sh)."""
    if name.startswith("lite0-"):
        return ["--config", "lite0", "--image-size", name.split("-")[1], "--imagenet"]
    return ["--config", name]
CHECK_SEED = 20180908
MODEL_SEED = 7
OPSET = 17


def log(msg: str) -> None:
    print(f"bench_networks: {msg}", file=sys.stderr, flush=True)


# =========================================================================== workers
# Each worker runs in a process of its own and prints one JSON object on stdout.

def peak_rss_mb() -> float:
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


def stats_ms(nanos: list[int]) -> dict:
    s = sorted(nanos)
    n = len(s)
    median = (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) / 1e6
    return {"median": median, "mean": sum(s) / n / 1e6, "min": s[0] / 1e6, "max": s[-1] / 1e6}


def time_calls(fn, warmup: int, count: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(count):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return stats_ms(times)


def read_check(path: str):
    from safetensors.numpy import load_file
    d = load_file(path)
    return d["image"], d["sketch"]


def worker_model(args) -> dict:
    """Writes a model with seeded random weights (when our binary gave none)."""
    import torch
    sys.path.insert(0, str(TOOLS_DIR))
    import gdh_torch
    from make_network_fixtures import randomise_norms
    torch.manual_seed(MODEL_SEED)
    config = gdh_torch.named_config(args.config, args.bits)
    g, h = gdh_torch.build_network("G_I", config), gdh_torch.build_network("H", config)
    randomise_norms(g)
    randomise_norms(h)
    gdh_torch.save_model(args.model, config, g, h)
    return {"model": args.model, "seed": MODEL_SEED}


def worker_export(args) -> dict:
    """Exports H (image.onnx) and H∘G_I (sketch.onnx) of a model file."""
    import torch
    sys.path.insert(0, str(TOOLS_DIR))
    import gdh_torch
    torch.set_num_threads(1)
    try:
        config, g, h = gdh_torch.load_model(args.model)
    except gdh_torch.ModelError as e:
        return {"model_error": str(e)}

    class Sketch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.G_I, self.H = g, h

        def forward(self, x):
            return self.H(self.G_I(x))

    s = config["imageSize"]
    x = torch.zeros(1, 3, s, s)
    t0 = time.time()
    for name, net in (("image", h), ("sketch", Sketch().eval())):
        path = os.path.join(args.dir, name + ".onnx")
        with torch.inference_mode():
            torch.onnx.export(net, (x,), path, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["h"],
                              dynamic_axes={"input": {0: "batch"}, "h": {0: "batch"}},
                              do_constant_folding=True)
    return {"config": config, "export_s": time.time() - t0, "torch": torch.__version__}


def worker_torch(args) -> dict:
    import torch
    sys.path.insert(0, str(TOOLS_DIR))
    import gdh_torch
    torch.set_num_threads(args.threads)
    config, g, h = gdh_torch.load_model(args.model)
    image, sketch = (torch.from_numpy(a.copy()) for a in read_check(args.check))
    with torch.inference_mode():
        image_h = h(image)
        sketch_h = h(g(sketch))
        image_ms = time_calls(lambda: h(image), args.warmup, args.count)
        sketch_ms = time_calls(lambda: h(g(sketch)), args.warmup, args.count)
    return {"version": torch.__version__, "threads": torch.get_num_threads(),
            "image_ms": image_ms, "sketch_ms": sketch_ms,
            "images_per_s": 1000.0 / image_ms["median"], "sketches_per_s": 1000.0 / sketch_ms["median"],
            "peak_rss_mb": peak_rss_mb(),
            "check": {"image_h": image_h[0].tolist(), "sketch_h": sketch_h[0].tolist()}}


def worker_ort(args) -> dict:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {n: ort.InferenceSession(os.path.join(args.dir, n + ".onnx"), so,
                                        providers=["CPUExecutionProvider"])
                for n in ("image", "sketch")}
    image, sketch = read_check(args.check)
    si, ss = sessions["image"], sessions["sketch"]
    image_h = si.run(None, {"input": image})[0]
    sketch_h = ss.run(None, {"input": sketch})[0]
    image_ms = time_calls(lambda: si.run(None, {"input": image}), args.warmup, args.count)
    sketch_ms = time_calls(lambda: ss.run(None, {"input": sketch}), args.warmup, args.count)
    return {"version": ort.__version__, "threads": args.threads,
            "image_ms": image_ms, "sketch_ms": sketch_ms,
            "images_per_s": 1000.0 / image_ms["median"], "sketches_per_s": 1000.0 / sketch_ms["median"],
            "peak_rss_mb": peak_rss_mb(),
            "check": {"image_h": image_h[0].tolist(), "sketch_h": sketch_h[0].tolist()}}


def worker_ort_streams(args) -> dict:
    """Throughput of `threads` concurrent streams, each a session of its own with one
    intra-op thread (onnxruntime releases the GIL while it runs)."""
    import threading
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    streams = args.threads
    image, sketch = read_check(args.check)
    rates = {}
    for kind, x in (("image", image), ("sketch", sketch)):
        sessions = [ort.InferenceSession(os.path.join(args.dir, kind + ".onnx"), so,
                                         providers=["CPUExecutionProvider"]) for _ in range(streams)]
        for sess in sessions:
            for _ in range(max(1, args.warmup)):
                sess.run(None, {"input": x})

        # Rounds of `count` runs per stream until at least a second has passed (as ours).
        def run(sess):
            for _ in range(args.count):
                sess.run(None, {"input": x})

        items, t0 = 0, time.perf_counter()
        while True:
            threads = [threading.Thread(target=run, args=(sess,)) for sess in sessions]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            items += streams * args.count
            if time.perf_counter() - t0 >= 1.0:
                break
        rates[kind] = items / (time.perf_counter() - t0)
    return {"version": ort.__version__, "streams": streams,
            "images_per_s": rates["image"], "sketches_per_s": rates["sketch"], "peak_rss_mb": peak_rss_mb()}


WORKERS = {"model": worker_model, "export": worker_export, "torch": worker_torch, "ort": worker_ort,
           "ort_streams": worker_ort_streams}


# =========================================================================== driver

def last_json(text: str):
    """The last line of `text` that is a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                return v
    return None


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of our waited-for children)."""
    import resource
    busy = 0.0
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = [int(v) for v in fh.readline().split()[1:9]]
        busy = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, r.ru_utime + r.ru_stime


def run_json(cmd: list[str], timeout: float, env=None) -> tuple[dict | None, str | None]:
    """Runs a command that prints one JSON object; (object, None) or (None, error).
    The object gets "others_cores": the CPU that other processes used meanwhile, in cores
    (machine busy time minus the command's own CPU time, over the wall time)."""
    busy0, own0 = cpu_seconds()
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        return None, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s: {shlex.join(cmd)}"
    if p.returncode != 0:
        tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
        return None, f"exit {p.returncode}: {' / '.join(tail) or '(no output)'}"
    v = last_json(p.stdout)
    if v is None:
        return None, f"no JSON object in the output of {shlex.join(cmd)}"
    busy1, own1 = cpu_seconds()
    wall = time.monotonic() - t0
    if busy1 > 0 and wall > 0:
        v["others_cores"] = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    return v, None


def worker_cmd(kind: str, **opts) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    for k, v in opts.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd


def probe_gdh(gdh: str) -> dict:
    """Whether `gdh bench encode` exists and which options it has."""
    if not os.access(gdh, os.X_OK):
        return {"ok": False, "error": f"{gdh} is not an executable file (build with `swift build -c release`)"}
    try:
        p = subprocess.run([gdh, "bench", "encode", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"ok": False, "error": f"{gdh} bench encode --help: {e}"}
    text = p.stdout + p.stderr
    if p.returncode != 0 or "--write-model" not in text:
        first = (text.strip().splitlines() or ["(no output)"])[0]
        return {"ok": False, "error": f"{gdh} has no `bench encode` subcommand with --write-model ({first})"}
    return {"ok": True, "check": "--check-input" in text, "streams": "--streams" in text}


def write_check(path: str, size: int) -> None:
    """Fixed inputs in [-1, 1]: image and sketch, (1, 3, size, size) float32."""
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(CHECK_SEED)
    image = rng.uniform(-1.0, 1.0, (1, 3, size, size)).astype(np.float32)
    # A sketch-like input: mostly white (1.0) with dark strokes.
    sketch = np.ones((1, 3, size, size), np.float32)
    strokes = rng.random((size, size)) < 0.08
    sketch[0][:, strokes] = rng.uniform(-1.0, 0.0, int(strokes.sum())).astype(np.float32)
    save_file({"image": image, "sketch": sketch}, path)


def swift_variants(args) -> list[tuple[str, dict]]:
    """(label, environment) for each run of our side."""
    env = dict(os.environ)
    current = env.get("OPENBLAS_CORETYPE")
    variants = [(current or "unset", env)]
    if args.both_coretypes:
        other = dict(env)
        if current:
            other.pop("OPENBLAS_CORETYPE")
            variants.append(("unset", other))
        else:
            other["OPENBLAS_CORETYPE"] = args.coretype
            variants.append((args.coretype, other))
    return variants


def agreement(ref: dict | None, got: dict | None) -> dict | None:
    """Max |difference| of the H outputs and the share of code bits that agree."""
    if not isinstance(ref, dict) or not isinstance(got, dict):
        return None
    out = {"max_abs": 0.0, "bits": 0, "agree": 0}
    for key in ("image_h", "sketch_h"):
        a, b = ref.get(key), got.get(key)
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b) or not a:
            return {"error": f"{key}: {len(a or [])} vs {len(b or [])} values"}
        out[key + "_max_abs"] = max(abs(float(x) - float(y)) for x, y in zip(a, b))
        out["max_abs"] = max(out["max_abs"], out[key + "_max_abs"])
        out["bits"] += len(a)
        out["agree"] += sum((float(x) > 0) == (float(y) > 0) for x, y in zip(a, b))
        out[key + "_scale"] = max(abs(float(x)) for x in a)
        out[key + "_rel"] = out[key + "_max_abs"] / out[key + "_scale"] if out[key + "_scale"] > 0 else 0.0
    out["percent"] = 100.0 * out["agree"] / out["bits"]
    return out


def run_config(args, name: str, work: Path, gdh: str, probe: dict) -> list[dict]:
    size = IMAGE_SIZES[name]
    count = args.count or DEFAULT_COUNT[name]
    warmup = args.warmup if args.warmup is not None else DEFAULT_WARMUP[name]
    cdir = work / name
    cdir.mkdir(parents=True, exist_ok=True)
    model = cdir / "model.safetensors"
    check = cdir / "check.safetensors"
    write_check(str(check), size)
    errors: list[str] = []

    # (a) our side; the first run writes the model.
    ours: dict[tuple[int, str], dict] = {}
    if not probe["ok"]:
        errors.append(f"ours: {probe['error']}")
    else:
        for threads in args.threads:
            for label, env in swift_variants(args):
                cmd = [gdh, "bench", "encode", *bench_args(name), "--bits", str(args.bits),
                       "--threads", str(threads), "--count", str(count), "--json"]
                if not model.exists():
                    cmd += ["--write-model", str(model)]
                if probe.get("check"):
                    cmd += ["--check-input", str(check)]
                if probe.get("streams") and threads > 1:
                    cmd += ["--streams", str(threads)]
                log(f"{name} T={threads} ours (OPENBLAS_CORETYPE {label}): {shlex.join(cmd)}")
                t0 = time.time()
                v, err = run_json(cmd, args.timeout, env)
                if err:
                    errors.append(f"ours T={threads} OPENBLAS_CORETYPE {label}: {err}")
                else:
                    log(f"  {time.time() - t0:.1f} s: {num(v.get('images_per_s'))} img/s, "
                        f"{num(v.get('sketches_per_s'), 2)} sketch/s (other processes: "
                        f"{v.get('others_cores', 0):.2f} cores)")
                    ours[(threads, label)] = v

    weights = "ours"
    export = None
    if model.exists():
        log(f"{name}: exporting ONNX (weights from our binary)")
        export, err = run_json(worker_cmd("export", model=model, dir=cdir), args.timeout)
        if export is not None and "model_error" in export:
            # Our file does not load into the PyTorch definitions: report it and give the
            # peers a model of their own.
            errors.append(f"our model file does not load in gdh_torch: {export['model_error']}")
            shutil.move(str(model), str(model) + ".rejected")
            export = None
        elif err:
            errors.append(f"ONNX export: {err}")
    if not model.exists():
        weights = "gdh_torch (seeded)"
        v, err = run_json(worker_cmd("model", model=model, config=name, bits=args.bits), args.timeout)
        if err:
            errors.append(f"cannot write a model with gdh_torch: {err}")
            return [{"config": name, "threads": t, "errors": errors} for t in args.threads]
        log(f"{name}: exporting ONNX (weights from gdh_torch)")
        export, err = run_json(worker_cmd("export", model=model, dir=cdir), args.timeout)
        if err or "model_error" in (export or {}):
            errors.append(f"ONNX export: {err or export['model_error']}")
            export = None

    results = []
    for threads in args.threads:
        r = {"config": name, "image_size": size, "threads": threads, "count": count,
             "warmup": warmup, "weights": weights, "ours": {}, "errors": list(errors)}
        for label, _ in swift_variants(args):
            if (threads, label) in ours:
                r["ours"][label] = ours[(threads, label)]
        for kind, opts in (("torch", {"model": model}), ("ort", {"dir": cdir})):
            if kind == "ort" and export is None:
                r[kind] = None
                continue
            log(f"{name} T={threads} {'PyTorch' if kind == 'torch' else 'onnxruntime'} ({count} runs)")
            v, err = run_json(worker_cmd(kind, threads=threads, count=count, warmup=warmup,
                                         check=check, **opts), args.timeout)
            if err:
                r["errors"].append(f"{kind} T={threads}: {err}")
            else:
                log(f"  {v['images_per_s']:.1f} img/s, {v['sketches_per_s']:.2f} sketch/s "
                    f"(other processes: {v.get('others_cores', 0):.2f} cores)")
            r[kind] = v
        if threads > 1 and export is not None:
            log(f"{name} {threads} onnxruntime streams of one thread ({count} runs each)")
            v, err = run_json(worker_cmd("ort_streams", threads=threads, count=count, warmup=warmup,
                                         check=check, dir=cdir), args.timeout)
            if err:
                r["errors"].append(f"ort streams T={threads}: {err}")
            r["ort_streams"] = v
        if args.pairs and probe["ok"] and export is not None:
            r["pairs"] = run_pairs(args, name, gdh, threads, count, warmup, check, cdir, r["errors"])
        ref = (r.get("torch") or {}).get("check")
        r["agreement"] = {"ort": agreement(ref, (r.get("ort") or {}).get("check"))}
        for label, v in r["ours"].items():
            if "check" in v:
                r["agreement"]["ours " + label] = agreement(ref, v.get("check"))
        results.append(r)
    return results


def run_pairs(args, name, gdh, threads, count, warmup, check, cdir, errors) -> dict:
    """--pairs N: ours and onnxruntime alternately, N times each (A B A B ...), on the
    model file of the main run; the ratio of each pair, so that a machine whose speed
    drifts between runs moves both sides of a ratio together."""
    ours, ort = [], []
    for k in range(args.pairs):
        cmd = [gdh, "bench", "encode", *bench_args(name), "--bits", str(args.bits), "--threads", str(threads),
               "--count", str(count), "--json"]
        v, err = run_json(cmd, args.timeout)
        w, err2 = run_json(worker_cmd("ort", threads=threads, count=count, warmup=warmup, check=check, dir=cdir),
                           args.timeout)
        if err or err2:
            errors.append(f"pair {k} T={threads}: {err or err2}")
            continue
        ours.append(v["images_per_s"])
        ort.append(w["images_per_s"])
        log(f"{name} T={threads} pair {k + 1}/{args.pairs}: ours {ours[-1]:.1f}, ORT {ort[-1]:.1f} img/s "
            f"({ours[-1] / ort[-1]:.2f}x)")
    ratios = sorted(a / b for a, b in zip(ours, ort))
    return {"ours": ours, "ort": ort, "ratios": ratios}


# =========================================================================== report

def num(v, digits=1) -> str:
    if isinstance(v, (int, float)):
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.{digits}f}"
    return "n/a"


def ratio(a, b) -> str:
    return fmt_ratio(a, b, digits=2)


def agree_cell(a) -> str:
    if a is None:
        return "n/a"
    if "error" in a:
        return "error: " + a["error"]
    return (f"max abs diff image {a['image_h_max_abs']:.1e} (max |H| {a['image_h_scale']:.1e}, "
            f"relative {a['image_h_rel']:.1e}), sketch {a['sketch_h_max_abs']:.1e} (max |H| "
            f"{a['sketch_h_scale']:.1e}, relative {a['sketch_h_rel']:.1e}); code bits agree "
            f"{a['percent']:.1f}% ({a['agree']}/{a['bits']})")


def markdown(results: list[dict], header: dict) -> str:
    m = header["machine"]
    lines = [
        f"### GDH encoder benchmark (ours vs PyTorch vs onnxruntime), {header['date']}",
        "",
        f"Machine: `{m['arch']}`, {m['cpu']}, {m['cores']} cores; OPENBLAS_CORETYPE="
        f"{header['openblas'] or '(unset)'}; PyTorch {header.get('torch') or '?'}, "
        f"onnxruntime {header.get('ort') or '?'}",
        "",
        f"Command: `{header['command']}`",
        "",
    ]
    others = [get(r, k, "others_cores") for r in results for k in ("torch", "ort")]
    others += [v.get("others_cores") for r in results for v in (r.get("ours") or {}).values()]
    others = [v for v in others if isinstance(v, (int, float))]
    if others:
        busy = max(others) > header["busy_cores"]
        lines += [f"CPU used by other processes during the measurements: up to {max(others):.2f} cores"
                  + (f"; rows marked * had more than {header['busy_cores']} cores busy elsewhere, "
                     "their numbers are unreliable" if busy else ""), ""]
    lines += [
        f"Batch 1 (ours: the `batch` of its JSON), {header['bits']} bits, random weights (the same "
        "file for all three), throughput = 1000 / median ms. ours/ORT > 1 means we are faster. "
        "BLAS core: OPENBLAS_CORETYPE of our run (the peers do not use OpenBLAS). GFLOP/s: our "
        "convolutions vs OpenBLAS sgemm, from our JSON. Peak RSS of each benchmark process "
        "(the peers' includes Python and the framework).",
        "",
        "| config | threads | BLAS core | ours img/s | ours sketch/s | PyTorch img/s | PyTorch sketch/s "
        "| ORT img/s | ORT sketch/s | ours/ORT img | ours/ORT sketch | conv / sgemm GFLOP/s "
        "| peak RSS MB ours / PyTorch / ORT |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, o = r.get("torch"), r.get("ort")
        rows = list(r.get("ours", {}).items()) or [("-", None)]
        for label, us in rows:
            mark = "*" if any(isinstance(get(x, "others_cores"), (int, float)) and
                              get(x, "others_cores") > header["busy_cores"] for x in (us, t, o)) else ""
            batch = get(us, "batch")
            bnote = f" (batch {batch})" if isinstance(batch, int) and batch != 1 else ""
            reported = get(us, "openblas_coretype")
            if isinstance(reported, str) and reported and reported != label:
                label = f"{label} (reports {reported})"
            lines.append(
                f"| {r['config']}{mark} | {r['threads']} | {label} "
                f"| {num(get(us, 'images_per_s'))}{bnote} | {num(get(us, 'sketches_per_s'), 2)} "
                f"| {num(get(t, 'images_per_s'))} | {num(get(t, 'sketches_per_s'), 2)} "
                f"| {num(get(o, 'images_per_s'))} | {num(get(o, 'sketches_per_s'), 2)} "
                f"| {ratio(get(us, 'images_per_s'), get(o, 'images_per_s'))} "
                f"| {ratio(get(us, 'sketches_per_s'), get(o, 'sketches_per_s'))} "
                f"| {num(get(us, 'conv_gflops'))} / {num(get(us, 'sgemm_gflops'))} "
                f"| {num(get(us, 'peak_rss_mb'), 0)} / {num(get(t, 'peak_rss_mb'), 0)} / {num(get(o, 'peak_rss_mb'), 0)} |")
    lines += ["", "Median ms per item, image (H) / sketch (H after G_I):", "",
              "| config | threads | ours | PyTorch | ONNX Runtime |", "|---|---:|---|---|---|"]
    for r in results:
        ours_cells = "; ".join(
            f"{num(get(v, 'image_ms', 'median'), 2)} / {num(get(v, 'sketch_ms', 'median'), 2)} ({k})"
            for k, v in r.get("ours", {}).items()) or "n/a"
        t, o = r.get("torch"), r.get("ort")
        lines.append(
            f"| {r['config']} | {r['threads']} | {ours_cells} "
            f"| {num(get(t, 'image_ms', 'median'), 2)} / {num(get(t, 'sketch_ms', 'median'), 2)} "
            f"| {num(get(o, 'image_ms', 'median'), 2)} / {num(get(o, 'sketch_ms', 'median'), 2)} |")
    streamed = [r for r in results if r.get("threads", 1) > 1
                and (r.get("ort_streams") or any("stream_images_per_s" in (v or {}) for v in r.get("ours", {}).values()))]
    if streamed:
        lines += ["", "Throughput of concurrent streams, each an encoder (ours: `--streams`, as gdhd's encoder "
                  "pool runs) or an onnxruntime session of its own on one thread; items per second over all "
                  "streams:", "",
                  "| config | streams | ours img/s | ours sketch/s | ORT img/s | ORT sketch/s | ours/ORT img | ours/ORT sketch |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in streamed:
            us = next(iter(r.get("ours", {}).values()), None)
            o = r.get("ort_streams")
            lines.append(
                f"| {r['config']} | {r['threads']} | {num(get(us, 'stream_images_per_s'))} "
                f"| {num(get(us, 'stream_sketches_per_s'), 2)} | {num(get(o, 'images_per_s'))} "
                f"| {num(get(o, 'sketches_per_s'), 2)} "
                f"| {ratio(get(us, 'stream_images_per_s'), get(o, 'images_per_s'))} "
                f"| {ratio(get(us, 'stream_sketches_per_s'), get(o, 'sketches_per_s'))} |")
    paired = [r for r in results if (r.get("pairs") or {}).get("ratios")]
    if paired:
        lines += ["", "Paired runs (`--pairs`): ours and onnxruntime alternately, images/s of each run, "
                  "ratio per pair; median and range of the ratios:", "",
                  "| config | threads | pairs | ours img/s | ORT img/s | ours/ORT median | min | max |",
                  "|---|---:|---:|---|---|---:|---:|---:|"]
        for r in paired:
            pr = r["pairs"]
            q = pr["ratios"]
            med = q[len(q) // 2] if len(q) % 2 else (q[len(q) // 2 - 1] + q[len(q) // 2]) / 2
            lines.append(f"| {r['config']} | {r['threads']} | {len(q)} | {', '.join(num(v) for v in pr['ours'])} "
                         f"| {', '.join(num(v) for v in pr['ort'])} | {med:.2f}x | {q[0]:.2f}x | {q[-1]:.2f}x |")
    lines += ["", "Agreement with PyTorch on one fixed image and sketch (H outputs before the sign; "
              "relative = max abs diff / max |H| of PyTorch):", ""]
    for r in results:
        for who, a in (r.get("agreement") or {}).items():
            lines.append(f"- {r['config']}, {r['threads']} thread(s), {who}: {agree_cell(a)}")
        if not r.get("ours"):
            lines.append(f"- {r['config']}, {r['threads']} thread(s), ours: n/a (no run)")
        elif not any(k.startswith("ours") and v for k, v in (r.get("agreement") or {}).items()):
            lines.append(f"- {r['config']}, {r['threads']} thread(s), ours: n/a "
                         "(our binary has no --check-input)")
        if r.get("weights") and r["weights"] != "ours":
            lines.append(f"- {r['config']}: weights written by {r['weights']}, not by our binary")
    seen, errs = set(), []
    for r in results:
        for e in r.get("errors", []):
            if e not in seen:
                seen.add(e)
                errs.append(f"- {r['config']}: {e}")
    if errs:
        lines += ["", "Errors:", ""] + errs
    return "\n".join(lines) + "\n"


# =========================================================================== main

def parse_list(kind):
    def parse(text: str):
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    return parse


def config_name(text: str) -> str:
    t = text.strip()
    if t not in IMAGE_SIZES:
        raise ValueError(f"unknown configuration {t!r} (small, paper, lite0-128 or lite0-224)")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark our GDH encoder, PyTorch and onnxruntime on the same weights; "
                    "print a Markdown table.")
    p.add_argument("--configs", type=parse_list(config_name), default=["small", "paper"],
                   help="comma-separated configurations: small, paper (default: both)")
    p.add_argument("--threads", type=parse_list(int), default=[1, 2],
                   help="comma-separated thread counts (default: 1,2)")
    p.add_argument("--count", type=int, default=None,
                   help="timed runs per measurement (default: 200 for small, 20 for paper)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs before the peers' timing (default: 20 for small, 3 for paper)")
    p.add_argument("--bits", type=int, default=64, help="code bits (default: %(default)s)")
    p.add_argument("--gdh", default=None,
                   help="our gdh binary (default: <repo>/.build/release/gdh)")
    p.add_argument("--both-coretypes", action="store_true",
                   help="run our side with OPENBLAS_CORETYPE as set and unset")
    p.add_argument("--coretype", default="Haswell",
                   help="OPENBLAS_CORETYPE for the second run when it is unset (default: %(default)s)")
    p.add_argument("--busy-cores", type=float, default=0.25,
                   help="mark measurements during which other processes used more CPU than "
                        "this many cores (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds allowed for each subprocess (default: %(default)s)")
    p.add_argument("--work-dir", default=None,
                   help="keep model, ONNX and check files here (default: a temporary directory, removed)")
    p.add_argument("--pairs", type=int, default=0,
                   help="also run ours and onnxruntime alternately this many times each and report "
                        "the ratio per pair (median, range)")
    p.add_argument("--out", default=None, help="also append the Markdown report to this file")
    p.add_argument("--jsonl", default=None, help="also append one JSON line per row (raw results)")
    # Internal: one measurement in a process of its own.
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--check", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    return p


def versions() -> dict:
    out = {}
    for key, mod in (("torch", "torch"), ("ort", "onnxruntime")):
        try:
            p = subprocess.run([sys.executable, "-c", f"import {mod}; print({mod}.__version__)"],
                               capture_output=True, text=True, timeout=120)
            out[key] = p.stdout.strip() or "missing"
        except (OSError, subprocess.TimeoutExpired):
            out[key] = "?"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    if any(t < 1 for t in args.threads) or (args.count is not None and args.count < 1) or args.pairs < 0:
        parser.error("--threads and --count must be positive, --pairs at least 0")

    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])) if argv is None \
        else shlex.join([sys.executable, __file__, *argv])
    gdh = args.gdh or str(REPO_ROOT / ".build" / "release" / "gdh")
    probe = probe_gdh(gdh)
    if not probe["ok"]:
        log(f"ours: {probe['error']}; running the peers only")
    elif not probe.get("check"):
        log("ours: `gdh bench encode` has no --check-input; our outputs will not be compared")
    header = {"machine": machine_info(),
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": command, "openblas": os.environ.get("OPENBLAS_CORETYPE"),
              "bits": args.bits, **versions()}

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_networks."))
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    t0 = time.time()
    try:
        for name in args.configs:
            results += run_config(args, name, work, gdh, probe)
    except KeyboardInterrupt:
        log("interrupted; reporting what finished")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.time() - t0:.0f} s")
    header["busy_cores"] = args.busy_cores

    emit_report(markdown(results, header), results, header, args.out, args.jsonl, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
