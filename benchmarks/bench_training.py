"""Training strategies on real data: zero-shot all-MiniLM-L6-v2 against every strategy trained
with its default settings on the SciFact and NFCorpus train splits, evaluated on test.

Each training runs in its own process (``cormorant train``) so its wall time and peak memory
(max RSS) are its own. Results are appended to benchmarks/results/training.json as each row
finishes, so an interrupted run keeps what it measured; ``--report`` renders docs/training.md.
On a machine with a CUDA GPU, ``--gpu`` writes benchmarks/results/training-gpu.json instead
(the Trainer picks the GPU and fp16 by itself) and the report puts those rows in a section of
their own, beside the CPU rows' time.

    python benchmarks/bench_training.py --datasets scifact --only in-batch bm25 star
    python benchmarks/bench_training.py --gpu --datasets scifact --only star adore
    python benchmarks/bench_training.py --datasets scifact --only unsupervised --max-time 25
    python benchmarks/bench_training.py --datasets scifact --only late-interaction
    python benchmarks/bench_training.py --report

``late-interaction`` (``cormorant train --kind late-interaction --max-time 25``) has a table of
its own: its peer is untrained ``chamfer`` (exact MaxSim over all-MiniLM-L6-v2's token
vectors), not the single-vector zero-shot row, and it is evaluated twice, with
``chamfer(model=DIR)`` and ``muvera(model=DIR)``; the muvera/chamfer ratio is the share of the
exact quality the fixed-dimensional encodings keep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, dataset_path, machine, write_json

RESULTS = REPO / "benchmarks" / "results" / "training.json"
GPU_RESULTS = REPO / "benchmarks" / "results" / "training-gpu.json"
MODELS = Path.home() / ".cache" / "cormorant" / "bench-models"
ZERO_SHOT = "zero-shot"
CROSS_ENCODER = "cross-encoder"
# TAS-Balanced once more with the trained `dense` model as both teachers: what the method does
# with a teacher stronger than the student, which the small cross-encoder here is not.
TAS_BI_TEACHER = "tas-balanced-bi"
# Order matters: adore trains against star's document index, tas-balanced uses the cross-encoder,
# tas-balanced-bi the dense model.
# GPL from the corpus alone (`--unsupervised`): the training queries and qrels are never read;
# only the test qrels score the result.
UNSUPERVISED = "unsupervised"
# The same with a teacher stronger than the student: exact Chamfer over the student's own
# MiniLM token vectors (0.712 on SciFact against its 0.645).
UNSUPERVISED_CHAMFER = "unsupervised-chamfer"
# Hard negatives distilled with Margin-MSE from a pipeline teacher that also denoises them
# (issue 29): rrf(bm25, chamfer) ranks SciFact at 0.7114 over the student's own MiniLM token
# vectors (cached), against the student's 0.645; 25 minutes on a CPU.
PIPELINE_TEACHER = "rrf(bm25, chamfer)"
DISTILLED = "bm25-margin-mse"
DISTILLED_OPTIONS = ["--negatives", "bm25", "--teacher", PIPELINE_TEACHER, "--denoise",
                     "--max-time", "25"]
# ADORE at its defaults with no STAR model under it: the query encoder trains against the
# base model's fixed document index for 10 epochs (adore's default: its steps encode queries
# only). The `adore` row above it is STAR then ADORE, measured when the default was 1 epoch.
ADORE_BASE = "adore-base"
# Dense-mined hard negatives distilled with Margin-MSE from exact Chamfer alone (0.712 / 0.349,
# score-based margins, unlike RRF's rank-based ones), four epochs, and no dev hold-out: every
# training query trains and the last checkpoint is kept, because NFCorpus's dev view kept the
# starting weights of a run whose test score it could not see (docs/training.md).
CHAMFER_DISTILLED = "chamfer-margin-mse"
CHAMFER_DISTILLED_OPTIONS = ["--negatives", "dense", "--teacher", "chamfer", "--epochs", "4"]
STRATEGIES = ["bm25", "star", "adore", ADORE_BASE, "distill-query", "dense", "in-batch", CROSS_ENCODER,
              "tas-balanced", TAS_BI_TEACHER, "random", DISTILLED, CHAMFER_DISTILLED,
              UNSUPERVISED, UNSUPERVISED_CHAMFER]
RERANK_DEPTH = 20
LATE = "late-interaction"
LATE_MINUTES = 25
START_MODEL = "late-interaction-start"
UNTRAINED_CHAMFER = "chamfer (untrained all-MiniLM-L6-v2 tokens)"
# The cross-encoder's negatives and run length where the default (BM25's top, one epoch)
# cannot work here. On NFCorpus zero-shot MiniLM puts the drawn positive above BM25's top 7
# non-positives 12.6% of the time, chance for 8 (benchmarks/bench_negative_difficulty.py): the
# listwise loss stayed at ln 8 over 240 steps. Against random documents it is 48%.
# One NFCorpus epoch is ~55 min here; the default time budget (15 min on a CPU) cuts it. A GPU
# trains the full epoch, on BM25's negatives from rank 30 (27% separable, not 13%).
CROSS_ENCODER_OPTIONS = {"nfcorpus": {"negatives": "random", "eval_steps": 100,
                                      "why": "BM25's top negatives are at chance for zero-shot"
                                             " here"}}
GPU_CROSS_ENCODER_OPTIONS = {"nfcorpus": {"negatives": "bm25", "range_min": 30,
                                          "eval_steps": 200,
                                          "why": "BM25's top 30 left out: at chance for"
                                                 " zero-shot here"}}


def cross_encoder_options(dataset: Path, gpu: bool) -> dict[str, Any] | None:
    """Where the cross-encoder row departs from the defaults on ``dataset``; None: it does not."""
    return (GPU_CROSS_ENCODER_OPTIONS if gpu else CROSS_ENCODER_OPTIONS).get(dataset.name)


def train_command(strategy: str, dataset: Path, out: Path, gpu: bool = False,
                  max_time: float | None = None) -> list[str]:
    base = [sys.executable, "-m", "cormorant.cli", "train", "--dataset", str(dataset),
            "--out", str(out), "--overwrite"]
    if max_time is not None:
        base += ["--max-time", f"{max_time:g}"]
    if strategy == UNSUPERVISED:
        return base + ["--unsupervised"]
    if strategy == UNSUPERVISED_CHAMFER:
        return base + ["--unsupervised", "--teacher", "chamfer"]
    if strategy == CROSS_ENCODER:
        options = cross_encoder_options(dataset, gpu)
        if options is None:
            return base + ["--kind", "cross-encoder", "--negatives", "bm25"]
        steps = ["--max-steps", str(options["max_steps"])] if "max_steps" in options else []
        return base + ["--kind", "cross-encoder", "--negatives", options["negatives"], *steps,
                       *config_file(out, {k: v for k, v in options.items()
                                          if k in ("eval_steps", "range_min")})]
    if strategy == "adore":
        return base + ["--negatives", "adore", "--base-model", str(out.parent / "star")]
    if strategy == ADORE_BASE:
        return base + ["--negatives", "adore"]
    if strategy == "tas-balanced":
        return base + ["--negatives", "tas-balanced", "--teacher", str(out.parent / CROSS_ENCODER)]
    if strategy == TAS_BI_TEACHER:
        teacher = str(out.parent / "dense")
        return base + ["--negatives", "tas-balanced", "--teacher", teacher,
                       *config_file(out, {"inbatch_teacher": teacher})]
    if strategy == DISTILLED:
        return base + DISTILLED_OPTIONS
    if strategy == CHAMFER_DISTILLED:
        return base + CHAMFER_DISTILLED_OPTIONS + config_file(out, {"dev_fraction": 0})
    return base + ["--negatives", strategy]


def config_file(out: Path, options: dict[str, Any]) -> list[str]:
    """``--config FILE`` for the settings a row sets that have no command-line flag, written
    beside the row's model folder ``out`` as ``<row>.json``."""
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps(options))
    return ["--config", str(config)]


def late_command(dataset: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cormorant.cli", "train", "--dataset", str(dataset), "--out",
            str(out), "--overwrite", "--kind", LATE, "--max-time", str(LATE_MINUTES)]


def late_pipelines(models: Path) -> dict[str, str]:
    """The late-interaction table's rows: untrained chamfer, and the trained model under
    exact chamfer and under muvera."""
    model = models / LATE
    return {UNTRAINED_CHAMFER: "chamfer", "chamfer(model=DIR)": f"chamfer(model={model})",
            "muvera(model=DIR)": f"muvera(model={model})",
            "chamfer(model=START)": f"chamfer(model={models / START_MODEL})"}


def save_late_start(models: Path, name: str) -> None:
    """The kind's untrained model (what training starts from) as a checkpoint, so its row
    says how much of the gap to untrained chamfer the conversion itself costs."""
    from cormorant.retrieval.encoders import resolve_model
    from cormorant.training.config import TrainConfig
    from cormorant.training.data import TrainingSet
    from cormorant.training.late_interaction import start_encoder

    out = models / START_MODEL
    if not (out / "artifact.metadata").is_file():
        config = TrainConfig(dataset=Path("d"), out=Path("o"), kind=LATE)
        data = TrainingSet.load(dataset_path(name), config.split) \
            if config.projection_start == "pca" else None  # the orthogonal start reads none
        start_encoder(resolve_model(None), config, data).save(out)


def measure_late(name: str, path: Path = RESULTS) -> None:
    """Train the late-interaction model on dataset ``name`` and evaluate its rows (saved
    after each)."""
    dataset = dataset_path(name)
    models = MODELS / name
    models.mkdir(parents=True, exist_ok=True)
    results = load_results(path)
    late = results.setdefault("late", {}).setdefault(name, {"rows": {}})
    print(f"[{name}] {LATE}: training ...", flush=True)
    late["training"] = timed_training(late_command(dataset, models / LATE))
    summary = json.loads((models / LATE / "training" / "summary.json").read_text())
    late["training"].update({k: summary.get(k) for k in ("time_budget", "hardware", "rows",
                                                          "negatives", "loss")})
    write_json(path, results)
    save_late_start(models, name)
    base = late["rows"].get(UNTRAINED_CHAMFER)
    for label, pipeline in late_pipelines(models).items():
        if label == UNTRAINED_CHAMFER and base is not None:
            continue  # it never changes
        row = evaluate_pipeline(pipeline, dataset)
        row["pipeline"] = pipeline.replace(str(models / START_MODEL), "START") \
            .replace(str(models / LATE), "DIR")
        if label != UNTRAINED_CHAMFER and base is not None:
            row.update(significance(row, base))
        late["rows"][label] = row
        base = late["rows"].get(UNTRAINED_CHAMFER)
        late["machine"] = machine()  # the CPU table's line stays the one its rows ran on
        write_json(path, results)
        print(f"[{name}] {label}: nDCG@10 {row['metrics']['nDCG@10']:.4f}", flush=True)


def timed_training(command: list[str]) -> dict[str, Any]:
    """Wall seconds and peak RSS (MB) of one training process (its own rusage, via wait4)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    # CPU seconds beside wall seconds: on a shared machine the wall time grows with the load,
    # the CPU time hardly does; on an idle 2-core machine the wall time is about cpu_s / 2.
    return {"train_s": round(seconds, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "load_1min": round(os.getloadavg()[0], 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "peak_exact": True, "stdout": stdout.strip().splitlines()[-1:]}


def pipeline_for(strategy: str, models: Path) -> str:
    if strategy == ZERO_SHOT:
        return "dense"
    if strategy == CROSS_ENCODER:
        return f"dense % {RERANK_DEPTH} >> rerank(model={models / CROSS_ENCODER})"
    return f"dense(model={models / strategy})"


def evaluate(strategy: str, dataset: Path, models: Path) -> dict[str, Any]:
    return evaluate_pipeline(pipeline_for(strategy, models), dataset)


def evaluate_pipeline(pipeline: str, dataset: Path) -> dict[str, Any]:
    from cormorant.data import DatasetSpec
    from cormorant.eval.harness import run_split
    from cormorant.retrieval.assemble import build_pipeline

    ds = DatasetSpec(dataset).load()
    start = time.perf_counter()
    stage = build_pipeline(pipeline, ds.corpus)
    result = run_split(stage, ds, "test", measures=["nDCG@10", "R@100"],
                       build_seconds=time.perf_counter() - start)
    return {"metrics": result.metrics, "timing": result.timing,
            "per_query": {q: m["nDCG@10"] for q, m in result.per_query.items()}}


def significance(row: dict[str, Any], zero: dict[str, Any]) -> dict[str, float]:
    from cormorant.eval.significance import paired_t_test, randomization_test

    qids = sorted(zero["per_query"])
    system = [row["per_query"].get(q, 0.0) for q in qids]
    baseline = [zero["per_query"][q] for q in qids]
    return {"t_test_p": paired_t_test(system, baseline),
            "randomization_p": randomization_test(system, baseline)}


def load_results(path: Path = RESULTS) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"machine": machine(), "rows": {}}


def measure(name: str, strategies: list[str], path: Path = RESULTS, gpu: bool = False,
            max_time: float | None = None) -> list[str]:
    """Train and evaluate each strategy on dataset ``name``, saving after every row. A strategy
    whose training fails is reported and skipped, so the others still run; returns those."""
    dataset = dataset_path(name)
    models = MODELS / name
    models.mkdir(parents=True, exist_ok=True)
    results = load_results(path)
    rows = results["rows"].setdefault(name, {})
    # The zero-shot row costs a corpus encoding and never changes: measure it once per dataset.
    again = [] if ZERO_SHOT in rows else [ZERO_SHOT]
    failed = []
    for strategy in [*again, *strategies]:
        print(f"[{name}] {strategy} ...", flush=True)
        try:
            row = measure_row(strategy, dataset, models, rows.get(ZERO_SHOT), gpu, max_time)
        except RuntimeError as exc:
            print(f"[{name}] {strategy} FAILED: {exc}", flush=True)
            failed.append(f"{name}/{strategy}")
            continue
        rows[strategy] = row
        results["machine"] = machine()
        write_json(path, results)
        print(f"[{name}] {strategy}: nDCG@10 {row['metrics']['nDCG@10']:.4f}"
              f" R@100 {row['metrics']['R@100']:.4f} train {row.get('train_s', 0):.0f}s", flush=True)
    return failed


def measure_row(strategy: str, dataset: Path, models: Path, zero: dict[str, Any] | None,
                gpu: bool = False, max_time: float | None = None) -> dict[str, Any]:
    """One table row: train (unless zero-shot), evaluate on test, compare with zero-shot."""
    row: dict[str, Any] = {}
    if strategy != ZERO_SHOT:
        row.update(timed_training(train_command(strategy, dataset, models / strategy, gpu,
                                                max_time)))
        summary = json.loads((models / strategy / "training" / "summary.json").read_text())
        row["dev_ndcg@10"] = summary.get("dev_ndcg@10")
        row["time_budget"] = summary.get("time_budget")  # the default 15 minutes on a CPU
        row["hardware"] = summary.get("hardware")
        row["peak_gpu_mb"] = (row["hardware"] or {}).get("peak_memory_mb")
        for key in ("teacher", "denoise", "queries_distilled", "queries_left_out"):
            if key in summary:
                row[key] = summary[key]
    row.update(evaluate(strategy, dataset, models))
    if zero is not None and strategy != ZERO_SHOT:
        row.update(significance(row, zero))
    row["pipeline"] = pipeline_for(strategy, Path("MODELS"))
    options = cross_encoder_options(dataset, gpu)
    if strategy == CROSS_ENCODER and options is not None:
        run = f"{options['max_steps']} steps" if "max_steps" in options \
            else "one epoch" if gpu else "the 15-minute budget"
        start = f" from rank {options['range_min']}" if "range_min" in options else ""
        row["note"] = f"{options['negatives']} negatives{start}, {run}: {options['why']}"
    if max_time is not None and strategy != ZERO_SHOT:
        row["note"] = "; ".join(filter(None, [row.get("note"), f"--max-time {max_time:g}"]))
    return row


def main() -> None:
    import argparse

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    args.add_argument("--only", nargs="+", default=STRATEGIES, choices=[*STRATEGIES, LATE],
                      help=f"strategies to run ({LATE} only when named)")
    args.add_argument("--gpu", action="store_true",
                      help=f"a GPU machine: write {GPU_RESULTS.relative_to(REPO)}; refused"
                           " without CUDA")
    args.add_argument("--max-time", type=float, default=None,
                      help="minutes each training may take (cormorant train --max-time)")
    args.add_argument("--report", action="store_true", help="only render docs/training.md")
    opts = args.parse_args()
    if not opts.report:
        path = GPU_RESULTS if opts.gpu else RESULTS
        if opts.gpu != _cuda():
            raise SystemExit("--gpu needs a CUDA GPU" if opts.gpu else
                             "this machine has a CUDA GPU: pass --gpu, so its rows do not mix"
                             " with the CPU rows")
        failed = [f for name in opts.datasets
                  for f in measure(name, [s for s in STRATEGIES if s in opts.only], path,
                                   opts.gpu, opts.max_time)] if set(opts.only) - {LATE} else []
        if LATE in opts.only:
            for name in opts.datasets:
                measure_late(name, path)
        if failed:
            raise SystemExit(f"training failed for {', '.join(failed)} (see above)")
    write_report(load_results(), load_results(GPU_RESULTS) if GPU_RESULTS.is_file() else None)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


START, END = "<!-- results:start -->", "<!-- results:end -->"
LATE_START, LATE_END = "<!-- late-results:start -->", "<!-- late-results:end -->"
GPU_START, GPU_END = "<!-- gpu-results:start -->", "<!-- gpu-results:end -->"


def write_report(results: dict[str, Any], gpu: dict[str, Any] | None = None) -> None:
    """Replace the results sections of docs/training.md with tables rendered from the JSON."""
    doc = REPO / "docs" / "training.md"
    text = _replace(doc.read_text(), START, END, render(results))
    if results.get("late"):
        text = _replace(text, LATE_START, LATE_END, render_late(results["late"]))
    if gpu is not None:
        text = _replace(text, GPU_START, GPU_END, render_gpu(gpu, results))
    doc.write_text(text)


def _replace(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + end + rest.split(end, 1)[1]


def _table_head(title: str, columns: list[str]) -> list[str]:
    """A Markdown section heading and the header rows of its table."""
    return [f"\n### {title}\n", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _versus_zero(row: dict[str, Any], zero: dict[str, Any] | None) -> tuple[str, str]:
    """Δ nDCG@10 against the zero-shot row and the randomisation test's p, as table cells."""
    delta = f"{row['metrics']['nDCG@10'] - zero['metrics']['nDCG@10']:+.4f}" \
        if zero and row is not zero else ""
    return delta, f"{row['randomization_p']:.3g}" if "randomization_p" in row else ""


def _label(strategy: str, row: dict[str, Any]) -> str:
    """The strategy's table label, with how its run departs from the defaults, if it does."""
    label = {CROSS_ENCODER: f"{strategy} (re-ranks dense top {RERANK_DEPTH})",
             TAS_BI_TEACHER: "tas-balanced (teacher: the dense row's model)",
             "adore": "adore (STAR, then ADORE)",
             ADORE_BASE: "adore (on the base model's document index)",
             UNSUPERVISED: "unsupervised (GPL, corpus only)",
             UNSUPERVISED_CHAMFER: "unsupervised (GPL, corpus only), teacher: chamfer",
             DISTILLED: f"bm25 + Margin-MSE from {PIPELINE_TEACHER}, denoised",
             CHAMFER_DISTILLED: "dense + Margin-MSE from chamfer (4 epochs, no dev hold-out)",
             }.get(strategy, strategy)
    notes = [row["note"]] if row.get("note") else []
    if row.get("denoise"):
        notes.append(f"{100 * row['denoise']['share_dropped']:.0f}% of mined negatives dropped")
    kept_start = _kept_starting_model(row)
    if kept_start:
        notes.append(kept_start)
    return f"{label} [{'; '.join(notes)}]" if notes else label


def _kept_starting_model(row: dict[str, Any]) -> str:
    """A note when the best dev checkpoint was the untrained start, so the row *is* zero-shot.
    The rule is ``cormorant.training.trainer.start_was_best``'s, not imported: that module
    loads torch and transformers (8 s) for a report that needs neither."""
    curve = row.get("dev_ndcg@10") or []
    if len(curve) < 2 or curve[0][0] != 0 or max(score for _, score in curve) > curve[0][1]:
        return ""
    return (f"training lowered dev nDCG@10 ({curve[0][1]:.3f} to {curve[-1][1]:.3f}): "
            "the best dev checkpoint kept is the starting model")


def render_gpu(gpu: dict[str, Any], cpu: dict[str, Any]) -> str:
    """The GPU rows beside the CPU rows of the same strategy: quality and wall time."""
    out = []
    for name, rows in gpu["rows"].items():
        zero, cpu_rows = rows.get(ZERO_SHOT), cpu["rows"].get(name, {})
        out += _table_head(f"{name} on a GPU (test split)", [
            "strategy", "nDCG@10", "Δ vs zero-shot", "p (randomisation)", "R@100",
            "training time (wall)", "on 2 CPU cores", "speed-up", "nDCG@10 on 2 CPU cores",
            "peak GPU memory"])
        for strategy in [ZERO_SHOT, *STRATEGIES]:
            row = rows.get(strategy)
            if row is None:
                continue
            ndcg = row["metrics"]["nDCG@10"]
            delta, p_r = _versus_zero(row, zero)
            other = cpu_rows.get(strategy, {})
            train = f"{row['train_s']:.0f} s" if "train_s" in row else "-"
            cpu_train = f"{other['train_s'] / 60:.1f} min" if "train_s" in other else "-"
            ratio = f"{other['train_s'] / row['train_s']:.0f}x" \
                if "train_s" in other and "train_s" in row else ""
            cpu_ndcg = f"{other['metrics']['nDCG@10']:.4f}" if "metrics" in other else "-"
            memory = f"{row['peak_gpu_mb'] / 1024:.1f} GB" if row.get("peak_gpu_mb") else "-"
            out.append(f"| {_label(strategy, row)} | {ndcg:.4f} | {delta} | {p_r}"
                       f" | {row['metrics']['R@100']:.4f} | {train} | {cpu_train} | {ratio}"
                       f" | {cpu_ndcg} | {memory} |")
    hardware = next((row["hardware"] for rows in gpu["rows"].values() for row in rows.values()
                     if row.get("hardware")), {})
    machine_line = gpu.get("machine", {})
    out.append(f"\nGPU: {hardware.get('gpu', '?')} ({hardware.get('precision', '?')} autocast),"
               f" {machine_line.get('cpus', '?')} CPU cores, Python {machine_line.get('python', '?')}."
               " Training time is the whole `cormorant train` process, as in the CPU table.\n")
    return "\n".join(out)


def render_late(late: dict[str, Any]) -> str:
    """The late-interaction table: untrained chamfer, the trained model under chamfer and
    muvera, with the muvera/chamfer ratio and the training's cost."""
    out = []
    for name, entry in late.items():
        rows, training = entry["rows"], entry.get("training", {})
        base = rows.get(UNTRAINED_CHAMFER)
        out += _table_head(f"{name}: late interaction (test split)", [
            "pipeline", "nDCG@10", "Δ vs untrained chamfer", "p (randomisation)", "R@100",
            "index build (encoding)", "search"])
        for row in rows.values():
            delta = f"{row['metrics']['nDCG@10'] - base['metrics']['nDCG@10']:+.4f}" \
                if base and row is not base else ""
            p_r = f"{row['randomization_p']:.3g}" if "randomization_p" in row else ""
            timing = row.get("timing") or {}
            out.append(f"| `{row['pipeline']}` | {row['metrics']['nDCG@10']:.4f} | {delta}"
                       f" | {p_r} | {row['metrics']['R@100']:.4f}"
                       f" | {timing.get('build_s', 0):.0f} s | {timing.get('search_s', 0):.0f} s |")
        exact, fde = rows.get("chamfer(model=DIR)"), rows.get("muvera(model=DIR)")
        if exact and fde:
            ratio = fde["metrics"]["nDCG@10"] / exact["metrics"]["nDCG@10"]
            out.append(f"\nmuvera / chamfer nDCG@10 on the trained model: {ratio:.3f} (goal"
                       " at least 0.99).")
        if training:
            cut = training.get("time_budget") or {}
            stopped = f", cut at step {cut['stopped_at_step']} of {cut['planned_steps']}" \
                if cut.get("stopped_at_step") else ""
            peak = f"peak {training['peak_rss_mb'] / 1024:.1f} GB" \
                if training.get("peak_rss_mb") else "peak memory not recorded"
            note = f" ({training['note']})" if training.get("note") else ""
            out.append(f"\nTraining{note}: {training['train_s'] / 60:.1f} min wall (load"
                       f" {training.get('load_1min', 0):.0f}), {training['cpu_s'] / 60:.1f} min"
                       f" CPU, {peak}{stopped};"
                       f" {training.get('loss')} loss, {training.get('negatives')} negatives.\n")
    return "\n".join(out)


def render(results: dict[str, Any]) -> str:
    out = []
    for name, rows in results["rows"].items():
        zero = rows.get(ZERO_SHOT)
        out += _table_head(
            f"{name} (test split, {len(zero['per_query']) if zero else 0} queries)",
            ["strategy", "nDCG@10", "Δ vs zero-shot", "p (t-test)", "p (randomisation)", "R@100",
             "training time (wall)", "CPU time", "peak memory"])
        for strategy in [ZERO_SHOT, *STRATEGIES]:
            row = rows.get(strategy)
            if row is None:
                out.append(f"| {strategy} | not run | | | | | | | |")
                continue
            ndcg, recall = row["metrics"]["nDCG@10"], row["metrics"]["R@100"]
            delta, p_r = _versus_zero(row, zero)
            p_t = f"{row['t_test_p']:.3g}" if "t_test_p" in row else ""
            train = f"{row['train_s'] / 60:.1f} min" if "train_s" in row else "-"
            if "load_1min" in row:
                train += f" (load {row['load_1min']:.0f})"
            cut = row.get("time_budget") or {}
            if cut.get("stopped_at_step"):
                train += f", cut at step {cut['stopped_at_step']} of {cut['planned_steps']}"
            cpu_time = f"{row['cpu_s'] / 60:.1f} min" if "cpu_s" in row \
                else "-" if strategy == ZERO_SHOT else "not recorded"
            memory = f"{row['peak_rss_mb'] / 1024:.1f} GB" if "peak_rss_mb" in row else "-"
            out.append(f"| {_label(strategy, row)} | {ndcg:.4f} | {delta} | {p_t} | {p_r} | {recall:.4f}"
                       f" | {train} | {cpu_time} | {memory} |")
    cpu = results.get("machine", {})
    out.append(f"\nMachine: {cpu.get('cpus', '?')} CPU cores, {cpu.get('platform', '')}; no GPU."
               " Training time is the whole `cormorant train` process (mining, teacher scoring,"
               " dev evaluations, saving); evaluation time is not in it. The wall time grows with"
               " the machine's load (the 1-minute load average at the end of training is shown;"
               " 2 means both cores busy); CPU time (user + system, all threads) hardly does: on an"
               " otherwise idle 2-core machine the wall time is about half of it.\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()
