"""Query reformulation before ``bm25`` and ``dense``: each stage against the same retriever
without it, with paired significance tests, and the cost per query.

For every retriever R in ``--retrievers`` and stage S in ``--stages`` the pipeline ``S >> R`` is
run over the same queries as ``R`` alone (a stage that names ``{R}`` places the retriever
itself: ``genqr_fusion({R})``, ``{R} >> genqr_ensemble(feedback=prf) >> {R}``); nDCG@10,
Recall@100 and per-query deltas go through ``cormorant.eval.significance`` (paired t-test and
randomisation test, Holm-corrected per dataset). Classic baselines run beside them: ``rm3``
(Lucene, needs the [lucene] extra) and ``rocchio(dense)``.

Generations go through the on-disk cache (``$CORMORANT_CACHE/generations.sqlite``): a re-run
costs no model time, and ``--queries N`` over a larger N re-uses the first N's generations.
The JSON is rewritten after every pipeline, so an interrupted run keeps what it measured.

Cost per query is reported twice: model seconds actually spent generating (cache misses,
on this machine) and the whole pipeline's wall time on this run.

Example:
    python benchmarks/bench_reformulate.py --dataset scifact --queries 50 \\
        --stages "genqr_ensemble(shots=3, max_new_tokens=24)" --retrievers bm25
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

from _common import dataset_path, parser, write_json

MEASURES = ("nDCG@10", "R@100", "RR@10")


LLM_STAGES = re.compile(r"\b(genqr_ensemble|genqr_fusion|reason)\b")


def pipeline_for(stage: str, retriever: str, llm: str) -> str:
    """``stage`` with ``retriever`` placed (after it, or where it says ``{R}``) and ``llm=``
    given to every language-model stage that names no model (as its last argument)."""
    if "{R}" not in stage:
        stage = f"{stage} >> {{R}}"
    if "llm=" not in stage:
        for found in reversed(list(LLM_STAGES.finditer(stage))):
            end = found.end()
            if stage[end:end + 1] != "(":
                stage = f"{stage[:end]}(llm={llm}){stage[end:]}"
                continue
            depth, close = 0, end
            for close in range(end, len(stage)):
                depth += {"(": 1, ")": -1}.get(stage[close], 0)
                if depth == 0:
                    break
            stage = f"{stage[:close]}, llm={llm}{stage[close:]}"
    return stage.replace("{R}", retriever)


def main() -> None:
    args = parser("Query reformulation stages against their retrievers alone.",
                  "reformulate.json")
    args.add_argument("--dataset", default="scifact")
    args.add_argument("--split", default="test")
    args.add_argument("--queries", type=int, default=50, help="seeded sample of the split")
    args.add_argument("--llm", default="transformers:smollm2")
    args.add_argument("--retrievers", default="bm25,dense")
    args.add_argument("--stages", nargs="*", default=[
        "genqr_ensemble(shots=3, max_new_tokens=24)",
        "genqr_fusion({R}, shots=3, max_new_tokens=24)"])
    args.add_argument("--baselines", nargs="*", default=["rm3", "rocchio(dense)"])
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--report", type=Path, default=None,
                      help="print the markdown tables of an earlier results JSON and exit")
    opts = args.parse_args()
    if opts.report is not None:
        print(markdown(json.loads(opts.report.read_text())))
        return

    from cormorant.data import DatasetSpec
    from cormorant.eval.harness import score_run
    from cormorant.llm import load_llm
    from cormorant.retrieval.assemble import build_pipeline
    from cormorant.types import Split

    ds = DatasetSpec(dataset_path(opts.dataset)).load()
    split = ds.split(opts.split)
    judged = sorted(q for q in split.queries if q in split.qrels)
    qids = sorted(random.Random(opts.seed).sample(judged, min(opts.queries, len(judged))))
    queries = {q: split.queries[q] for q in qids}
    # Judge only the sampled queries: the others were never searched.
    split = Split(queries, {q: split.qrels[q] for q in qids},
                  {q: split.excluded[q] for q in qids if q in split.excluded})
    # One model (and one cache) shared by every stage; ten prompts (one per instruction) per
    # query go through the model as one batch.
    llm = load_llm(opts.llm, **({"batch_size": 10} if opts.llm.startswith("transformers") else {}))
    built: dict[str, Any] = {}
    results: dict[str, Any] = {}
    payload: dict[str, Any] = {"dataset": opts.dataset, "split": opts.split, "llm": opts.llm,
                               "queries": len(qids), "query_ids": qids, "measures": MEASURES,
                               "runs": results, "comparisons": [], "errors": {}}

    def evaluate(text: str, baseline: str | None = None) -> dict[str, Any] | None:
        try:
            stage = build_pipeline(text, ds.corpus, built)
        except Exception as exc:  # noqa: BLE001 - e.g. no Java for rm3: record and go on
            payload["errors"][text] = f"{type(exc).__name__}: {exc}"
            print(f"skipped {text}: {exc}")
            return None
        _attach(stage, llm)
        before_s, before_miss = llm.generate_seconds, llm.misses
        start = time.perf_counter()
        run = stage.rank(queries)
        wall = time.perf_counter() - start
        scored = score_run(run, opts.dataset, opts.split, split, text, {}, 1000, MEASURES)
        record = {"metrics": scored.metrics, "per_query": scored.per_query,
                  "wall_s": round(wall, 2), "ms_per_query": round(1000 * wall / len(qids), 1),
                  "generations": llm.misses - before_miss,
                  "model_s_per_query": round((llm.generate_seconds - before_s) / len(qids), 2),
                  "baseline": baseline}
        critic = critic_accuracy(stage, split.qrels)
        if critic:
            record["critic"] = critic
        results[text] = record
        print(f"{text}: nDCG@10 {scored.metrics['nDCG@10']:.4f}  {record['ms_per_query']} ms/q"
              f"  ({record['generations']} new generations)")
        return record

    def save() -> None:
        payload["comparisons"] = [c.to_json() for c in comparisons(results, opts.dataset)]
        write_json(opts.out, payload)

    for retriever in opts.retrievers.split(","):
        evaluate(retriever)
        save()
        for stage in opts.stages:
            evaluate(pipeline_for(stage, retriever, opts.llm), retriever)
            save()
    for baseline in opts.baselines:
        evaluate(baseline, BASELINE_OF.get(baseline))
        save()


BASELINE_OF = {"rm3": "bm25", "rocchio(dense)": "dense"}


def comparisons(results: dict[str, Any], dataset: str) -> list[Any]:
    """Each pipeline against the retriever it uses (rm3 against bm25), Holm-corrected."""
    from cormorant.eval.significance import compare, correct

    found = []
    for text, record in results.items():
        base = record.get("baseline")
        if base is None or base not in results:
            continue
        for measure in MEASURES:
            found.append(compare(dataset, measure, text, base,
                                 {q: v[measure] for q, v in record["per_query"].items()},
                                 {q: v[measure] for q, v in results[base]["per_query"].items()}))
    return correct(found) if found else found


def markdown(payload: dict[str, Any]) -> str:
    """The results as a markdown table: each pipeline, its baseline, deltas and p-values."""
    comps = {(c["system"], c["measure"]): c for c in payload["comparisons"]}
    lines = ["| pipeline | nDCG@10 | R@100 | RR@10 | vs | delta nDCG@10 (p, Holm) | W/T/L |"
             " new generations | model s per generation | ms/query (this run) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for text, record in payload["runs"].items():
        m = record["metrics"]
        c = comps.get((text, "nDCG@10"))
        versus = f"`{c['baseline']}`" if c else ""
        delta = (f"{c['delta']:+.4f} ({c['randomization_p_adjusted']:.3f})" if c else "")
        wtl = f"{c['wins']}/{c['ties']}/{c['losses']}" if c else ""
        made = record["generations"]
        # Seconds per generated text: model time of this run's cache misses over their number.
        per = f"{record['model_s_per_query'] * payload['queries'] / made:.1f}" if made else "-"
        lines.append(f"| `{text}` | {m['nDCG@10']:.4f} | {m['R@100']:.4f} | {m['RR@10']:.4f} |"
                     f" {versus} | {delta} | {wtl} | {made} | {per} |"
                     f" {record['ms_per_query']:,.0f} |")
    critics = {text: r["critic"] for text, r in payload["runs"].items() if r.get("critic")}
    if critics:
        lines += ["", "| pipeline | pairs judged | said yes | judged relevant (base rate) |"
                  " relevant among yes (precision) | recall | queries with none kept |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for text, c in critics.items():
            precision = f"{c['precision']:.0%}" if c["precision"] is not None else "-"
            recall = f"{c['recall']:.0%}" if c["recall"] is not None else "-"
            lines.append(f"| `{text}` | {c['judged']} | {c['said_yes']} |"
                         f" {c['relevant_judged']} ({c['base_rate']:.0%}) |"
                         f" {c['relevant_said_yes']} ({precision}) | {recall} |"
                         f" {c['queries_none_kept']} |")
    return "\n".join(lines)


def critic_accuracy(stage: Any, qrels: dict[str, dict[str, int]]) -> dict[str, Any] | None:
    """How the critic's yes/no judgements of the last search agree with the qrels.

    ``precision`` (judged relevant among its "yes") is worth reading against ``base_rate``
    (judged relevant among all the pairs it saw): a critic at chance has the two equal.
    """
    from cormorant.retrieval.reformulate import GenQREnsemble, language_model_stages

    verdicts = [v for node in language_model_stages(stage) if isinstance(node, GenQREnsemble)
                for v in node.verdicts.items()]
    if not verdicts:
        return None
    pairs = [(qrels.get(q, {}).get(d, 0) > 0, said) for q, docs in verdicts
             for d, said in docs.items()]
    yes = [relevant for relevant, said in pairs if said]
    relevant = sum(r for r, _ in pairs)
    return {"judged": len(pairs), "said_yes": len(yes), "relevant_judged": relevant,
            "relevant_said_yes": sum(yes),
            "precision": round(sum(yes) / len(yes), 4) if yes else None,
            "recall": round(sum(yes) / relevant, 4) if relevant else None,
            "base_rate": round(relevant / len(pairs), 4),
            "queries_none_kept": sum(not any(docs.values()) for _, docs in verdicts)}


def _attach(stage: Any, llm: Any) -> None:
    """Give every language-model stage of ``stage`` the one shared model."""
    from cormorant.retrieval.reformulate import language_model_stages

    for node in language_model_stages(stage):
        node.llm = llm


if __name__ == "__main__":
    main()
