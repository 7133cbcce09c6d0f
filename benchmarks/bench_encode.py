"""Encoding throughput and quality of each backend and precision, against bare sentence-transformers.

Speed (``--part speed``): bare ``SentenceTransformer(path).encode(texts, batch_size=64,
normalize_embeddings=True)`` (torch fp32) against cormorant's ``SentenceTransformerEncoder`` on
torch, ONNX Runtime and OpenVINO, fp32 and int8 (dynamic), on the same texts and cores:
SciFact and NFCorpus documents (title and text) and short queries (SciFact test claims). A
warm-up of each, then interleaved rounds (A, B, C, ... A, B, C) so machine drift hits all
alike; docs/s from the median round; the minimum cosine of each to bare's vectors.

Quality (``--part quality``): nDCG@10 on SciFact and NFCorpus test for the dense stage with
all-MiniLM-L6-v2 as built (torch fp32), with ONNX int8 documents and queries, with fp32
documents and int8 queries; ``precision=int8`` and ``precision=binary`` at rescore 1, 4 and 10
(index bytes per document, queries per second); and ``dim=`` 256/128/64 (the first dimensions
of the cached fp32 vectors, re-normalised: what ``dim=`` computes, without re-encoding).

int8 recipes (``--part recipes``): which of MiniLM's products dynamic int8 may quantise, and what
each choice costs: the minimum cosine to torch's vectors on the shortest NFCorpus test queries
(where one activation scale per tensor is coarsest) and on SciFact abstracts, and speed against
bare sentence-transformers, interleaved as above. Recipes: every op ONNX Runtime quantises
(``quantize=int8``'s), MatMul only (the fused ``Attention`` and the embedding ``Gather`` kept in
fp32), and MatMul with the feed-forward up-projections (``intermediate.dense``) also kept fp32.

Search (``--part search``): index bytes per document and queries per second of the index
search alone (queries encoded once), per precision, rescore and FAISS kind.

Sizes: ``--quick`` 32 documents per dataset and one round; otherwise 128 and 3 rounds (a 2-core
CPU shared with other work encodes 5-20 abstracts a second).
"""

from __future__ import annotations

import itertools
import time
from functools import partial
from typing import Any

from _common import dataset_path, interleaved, keeping, parser, repeats, summary, write_json

SIZES = {"quick": 32, "full": 128}
BATCH = 64
WARMUP = 8
RUNTIMES = [("torch", "none"), ("onnx", "none"), ("onnx", "int8"), ("openvino", "none"),
            ("openvino", "int8")]
DATASETS = ("scifact", "nfcorpus")


def texts_of(name: str, count: int) -> tuple[list[str], list[str]]:
    """The first ``count`` documents of a dataset and its test queries, as texts."""
    from cormorant.data import load_dataset

    dataset = load_dataset(dataset_path(name))
    docs = [d.contents for d in itertools.islice(dataset.corpus, count)]
    return docs, list(dataset.split("test").queries.values())


def speed(quick: bool, rounds: int) -> dict[str, Any]:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from cormorant.retrieval.backends import Runtime
    from cormorant.retrieval.encoders import SentenceTransformerEncoder

    ours = {f"{b}-{q}": SentenceTransformerEncoder(batch_size=BATCH, runtime=Runtime(b, q))
            for b, q in RUNTIMES}
    path = ours["torch-none"].path
    bare = SentenceTransformer(path, device="cpu", local_files_only=True)
    found: dict[str, Any] = {}
    count = SIZES["quick" if quick else "full"]
    for dataset in DATASETS:
        docs, queries = texts_of(dataset, count)
        for kind, texts in (("documents", docs), ("queries", queries[:count])):
            encoders = {"bare": partial(bare.encode, batch_size=BATCH, normalize_embeddings=True)}
            for name, encoder in ours.items():
                encoders[name] = (encoder.encode_documents if kind == "documents"
                                  else encoder.encode_queries)
            for encode in encoders.values():
                encode(texts[:WARMUP])
            outputs: dict[str, Any] = {}
            samples = interleaved({n: keeping(outputs, n, partial(e, texts))
                                   for n, e in encoders.items()}, rounds, warmup=False)
            rates = {n: summary(s, len(texts)) for n, s in samples.items()}
            found[f"{dataset}-{kind}"] = {
                "texts": len(texts), "mean_chars": sum(map(len, texts)) / len(texts),
                "per_s": {n: r["per_s"] for n, r in rates.items()},
                "speedup_vs_bare": {n: r["per_s"] / rates["bare"]["per_s"] for n, r in rates.items()},
                "min_cosine_vs_bare": {n: float((np.asarray(o) * outputs["bare"]).sum(1).min())
                                       for n, o in outputs.items()},
                "timing": rates}
            print(dataset, kind, {n: round(r["per_s"], 1) for n, r in rates.items()}, flush=True)
    return {"batch_size": BATCH, "rounds": rounds, "model": ours["torch-none"].name,
            "max_seq_length": ours["torch-none"].settings["max_length"], "speed": found}


def ndcg(stage: Any, dataset: Any, split: Any) -> tuple[float, float]:
    """(nDCG@10, queries per second) of a built stage on a split."""
    from cormorant.eval.harness import score_run

    start = time.perf_counter()
    run = stage.search(split.queries, k=100)
    seconds = time.perf_counter() - start
    result = score_run(run, dataset.name, "test", split, str(stage), {}, 100, ["nDCG@10"])
    return float(result.metrics["nDCG@10"]), len(split.queries) / seconds


def quality(quick: bool) -> dict[str, Any]:
    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline

    found: dict[str, Any] = {}
    variants = ["dense", "dense(backend=onnx, quantize=int8)", "dense(query_backend=onnx,"
                " query_quantize=int8)"]
    variants += [f"dense(precision={p}, rescore={r})" for p in ("int8", "binary")
                 for r in (1, 4, 10)]
    for name in DATASETS:
        dataset = load_dataset(dataset_path(name))
        split = dataset.split("test")
        rows: dict[str, Any] = {}
        for spec in variants if not quick else variants[:1]:
            start = time.perf_counter()
            stage = build_pipeline(spec, dataset.corpus)
            built = time.perf_counter() - start
            score, qps = ndcg(stage, dataset, split)
            rows[spec] = {"nDCG@10": score, "queries_per_s": qps, "build_s": built,
                          "index_bytes_per_doc": index_bytes(stage)}
            print(name, spec, round(score, 4), flush=True)
        base = rows["dense"]["nDCG@10"]
        for row in rows.values():
            row["kept"] = row["nDCG@10"] / base
        rows.update(truncated(build_pipeline("dense", dataset.corpus), dataset, split, base))
        found[name] = rows
    return {"quality": found}


def index_bytes(stage: Any) -> float:
    """Bytes per document of the index searched first (codes only, no ids)."""
    index = stage.segments.items[0].data.index
    return index.nbytes / len(index.ids)


def truncated(stage: Any, dataset: Any, split: Any, base: float) -> dict[str, Any]:
    """nDCG@10 of the first 256/128/64 dimensions, re-normalised (exact search)."""
    import numpy as np

    from cormorant.eval.harness import score_run
    from cormorant.types import Run

    ids = stage.segments.items[0].doc_ids
    docs = stage.segments.items[0].data.vectors(np.arange(len(ids)))
    queries = stage.encode_queries(split.queries)
    rows = {}
    for dim in (256, 128, 64):
        d = docs[:, :dim] / np.linalg.norm(docs[:, :dim], axis=1, keepdims=True)
        q = queries[:, :dim] / np.linalg.norm(queries[:, :dim], axis=1, keepdims=True)
        scores = q @ d.T
        top = np.argsort(-scores, axis=1)[:, :100]
        run = Run({qid: {ids[j]: float(scores[i, j]) for j in top[i]}
                   for i, qid in enumerate(split.queries)})
        score = score_run(run, dataset.name, "test", split, f"dense(dim={dim})", {}, 100,
                          ["nDCG@10"]).metrics["nDCG@10"]
        rows[f"dense(dim={dim})"] = {"nDCG@10": float(score), "kept": float(score) / base,
                                     "index_bytes_per_doc": dim * 4}
        print(dataset.name, dim, round(float(score), 4), flush=True)
    return rows


def search_speed(quick: bool, rounds: int) -> dict[str, Any]:
    """Index bytes per document and queries per second of the index search alone (queries
    encoded once before), per precision; from the cached fp32 corpus vectors."""
    import numpy as np

    from cormorant.data import load_dataset
    from cormorant.retrieval.assemble import build_pipeline

    found: dict[str, Any] = {}
    variants = ["dense"] + [f"dense(precision={p}, rescore={r})" for p in ("int8", "binary")
                            for r in (1, 4, 10)]
    variants += ["dense(index=hnsw)", "dense(precision=binary, index=hnsw, rescore=10)"]
    for name in DATASETS:
        dataset = load_dataset(dataset_path(name))
        queries = dataset.split("test").queries
        rows: dict[str, Any] = {}
        vectors = None
        for spec in variants[:2] if quick else variants:
            stage = build_pipeline(spec, dataset.corpus)
            vectors = stage.encode_queries(queries) if vectors is None else vectors
            qids = list(queries)
            search = partial(stage.search_vectors, qids, vectors, 10)
            samples = interleaved({"search": search}, rounds)["search"]
            rows[spec] = {"queries_per_s": len(qids) / float(np.median(samples)),
                          "index_bytes_per_doc": index_bytes(stage)}
            print(name, spec, {k: round(v, 1) for k, v in rows[spec].items()}, flush=True)
        found[name] = rows
    return {"search": found}


RECIPES = {"all ops (quantize=int8)": {},
           "MatMul only": {"op_types_to_quantize": ["MatMul"]},
           "MatMul, FFN up-projection fp32": {"op_types_to_quantize": ["MatMul"],
                                              "exclude": "intermediate/dense"}}


def recipes(quick: bool, rounds: int) -> dict[str, Any]:
    """Minimum cosine and speed of each int8 recipe (see the module docstring)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from cormorant.retrieval.encoders import SentenceTransformerEncoder
    from cormorant.retrieval.exports import RuntimeModel, exported, transformer_module

    count = SIZES["quick" if quick else "full"]
    docs, _ = texts_of("scifact", count)
    queries = sorted(texts_of("nfcorpus", 0)[1], key=len)[:count * 2]
    torch_encoder = SentenceTransformerEncoder(batch_size=BATCH)
    bare = SentenceTransformer(torch_encoder.path, device="cpu", local_files_only=True)
    source = exported(transformer_module(bare), torch_encoder.fingerprint, "none", fused=True)
    graph = onnx.load(str(source))
    reference = {"queries": bare.encode(queries, normalize_embeddings=True),
                 "documents": bare.encode(docs, normalize_embeddings=True)}
    models: dict[str, Any] = {"bare": bare}
    work = Path(tempfile.mkdtemp(prefix="int8-recipes-"))
    for i, (name, recipe) in enumerate(RECIPES.items()):
        options = {k: v for k, v in recipe.items() if k != "exclude"}
        if "exclude" in recipe:
            options["nodes_to_exclude"] = [n.name for n in graph.graph.node
                                           if recipe["exclude"] in n.name]
        target = work / f"{i}.onnx"
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         per_channel=True, **options,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        model = SentenceTransformer(torch_encoder.path, device="cpu", local_files_only=True)
        module = transformer_module(model)
        module.model = RuntimeModel(target, module.model, "onnx")
        models[name] = model
    found: dict[str, Any] = {}
    for kind, texts in (("queries", queries), ("documents", docs)):
        outputs: dict[str, Any] = {}
        encoders = {n: partial(m.encode, texts, batch_size=BATCH, normalize_embeddings=True)
                    for n, m in models.items()}
        samples = interleaved({n: keeping(outputs, n, e) for n, e in encoders.items()}, rounds)
        rates = {n: summary(s, len(texts))["per_s"] for n, s in samples.items()}
        found[kind] = {"texts": len(texts), "mean_chars": sum(map(len, texts)) / len(texts),
                       "speedup_vs_bare": {n: r / rates["bare"] for n, r in rates.items()},
                       "min_cosine_vs_torch": {
                           n: float((np.asarray(o) * reference[kind]).sum(1).min())
                           for n, o in outputs.items()}}
        print(kind, found[kind], flush=True)
    return {"recipes": found}


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "encode.json")
    args.add_argument("--part", choices=["speed", "quality", "search", "recipes", "all"], default="all")
    args = args.parse_args()
    result: dict[str, Any] = {"benchmark": "encode", "quick": args.quick}
    if args.part in ("speed", "all"):
        result.update(speed(args.quick, 1 if args.quick else repeats(args)))
    if args.part in ("quality", "all"):
        result.update(quality(args.quick))
    if args.part in ("search", "all"):
        result.update(search_speed(args.quick, repeats(args)))
    if args.part in ("recipes", "all"):
        result.update(recipes(args.quick, 1 if args.quick else repeats(args)))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
