"""The ``cormorant`` command line: data, index build, search, eval.

Every user mistake ends in a one-line ``error: ...`` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cormorant.errors import CormorantError
from cormorant.training.config import TrainConfig
from cormorant.training.options import command_options

if TYPE_CHECKING:
    from cormorant.service.settings import ServiceSettings

_TYPE_NAMES = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "Path": "PATH", "bool": ""}


def _conventional_type(original):  # noqa: ANN001, ANN202
    """Help shows INTEGER, TEXT, PATH as click and most tools do, not typer's ``<list[str]>``
    (repetition is said in each option's help)."""
    def display_type(self, ctx):  # noqa: ANN001, ANN202
        label = original(self, ctx)
        if not label or not label.startswith("<"):
            return label
        inner = label[1:-1]
        inner = inner[5:-1] if inner.startswith("list[") else inner
        return _TYPE_NAMES.get(inner, inner.upper() if inner.isidentifier() else inner) or None
    return display_type


# typer offers no hook for the type column; its parameter class is patched for this process.
typer.core._TyperParameter.display_type = _conventional_type(  # type: ignore[attr-defined]
    typer.core._TyperParameter.display_type)  # type: ignore[attr-defined]

app = typer.Typer(help="Cormorant: dense retrieval and ranking. Index, search and evaluate "
                       "collections with BM25, dense FAISS indexes and pipelines of them.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode="markdown")  # reflow docstring paragraphs to the terminal
data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True,
                       rich_markup_mode="markdown")
index_app = typer.Typer(help="Build indexes, and add, delete and merge documents in them.",
                        no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="Dataset folder: BEIR"
                                          " (corpus.jsonl[.gz]), MS MARCO tsv or BRIGHT domain.")]
DocumentsOpt = Annotated[Path | None, typer.Option(
    help="BRIGHT only: the documents file (jsonl or parquet with id, content).")]
LongOpt = Annotated[bool, typer.Option(
    "--long-documents", help="BRIGHT only: judge against gold_ids_long (long-document variant).")]


def _pipeline_help() -> str:
    from cormorant import registry

    return ("Pipeline, e.g. 'bm25', 'dense(model=PATH)', 'rrf(bm25, dense) % 100', 'bm25 % 100 >>"
            f" dense'. Stages: {', '.join(registry.stage_names())}; 'cormorant stages NAME' gives"
            " their parameters.")


PipelineHelp = _pipeline_help()


def _version(value: bool) -> None:
    if value:
        from cormorant import __version__

        typer.echo(f"cormorant {__version__}")
        raise typer.Exit()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option(
              "--verbose", "-v", help="Log progress details and libraries' own output"
                                      " (anywhere on the command line).")] = False,
          version: Annotated[bool, typer.Option(
              "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
          ) -> None:
    from cormorant.console import QUIET_ENVIRONMENT, configure

    configure(verbose)
    if not verbose:  # the command owns its process: libraries read these when they load
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)


def _load(dataset: Path, documents: Path | None = None, long_documents: bool = False):  # noqa: ANN202
    from cormorant.data import DatasetSpec

    return DatasetSpec(dataset, documents, long_documents).load()


@data_app.command("info")
def data_info(dataset: Annotated[Path, typer.Argument(help="Dataset folder or irds:<id>.")],
              documents: DocumentsOpt = None, long_documents: LongOpt = False) -> None:
    """Validate a dataset and print its corpus size and per-split counts.

    Exits with status 1 if a check fails: judged documents missing from the corpus, duplicate
    document ids, or judged queries without text.
    """
    from cormorant.data.validate import validate_dataset

    report = validate_dataset(_load(dataset, documents, long_documents))
    typer.echo(report.summary())
    for problem in report.problems:
        typer.echo(f"  problem: {problem}", err=True)
    if report.problems:
        raise typer.Exit(1)


@data_app.command("list")
def data_list(roots: Annotated[list[Path] | None, typer.Argument(
                  help="Folders to search for datasets (default: data and ../shared/data).")] = None
              ) -> None:
    """List the datasets under some folders, with their format and counts."""
    from cormorant.data.validate import find_datasets, validate_dataset

    roots = roots or [p for p in (Path("data"), Path("../shared/data")) if p.is_dir()]
    found = 0
    for path in find_datasets(roots):
        found += 1
        try:
            typer.echo(f"{path}: " + validate_dataset(_load(path)).summary(one_line=True))
        except CormorantError as exc:
            typer.echo(f"{path}: unreadable ({exc})")
    if not found:
        raise CormorantError(f"no datasets under {', '.join(map(str, roots)) or 'the defaults'}")


@index_app.command("build")
def index_build(dataset: DatasetOpt,
                out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
                pipeline: Annotated[str, typer.Option("--pipeline", "-p", help=PipelineHelp)] = "bm25",
                documents: DocumentsOpt = None, long_documents: LongOpt = False,
                overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
                shards: Annotated[int | None, typer.Option(
                    help="Write a sharded index of N shards (documents routed by a hash of"
                         " their id; see docs/sharding.md).  [default: one ordinary index]",
                    show_default=False)] = None,
                ray: Annotated[str | None, typer.Option(
                    "--ray", help="Encode (dense, chamfer, muvera) on a Ray cluster (Ray Data, an"
                                  " actor pool), then write each shard as a Ray task: 'auto'"
                                  " joins this machine's cluster, or give its address; needs"
                                  " the [ray] extra.  [default: in this process]",
                    show_default=False)] = None,
                actors: Annotated[int, typer.Option(
                    help="Encoders running at once: Ray actors with --ray, else threads.")] = 1,
                gpus_per_actor: Annotated[float, typer.Option(
                    help="GPUs each Ray actor asks for (0.5: two actors share a card).")] = 0.0,
                ) -> None:
    """Index a dataset's corpus for every stage of a pipeline (written atomically)."""
    from cormorant.index.sharding import check_shard_count
    from cormorant.retrieval.assemble import save_index, validate
    from cormorant.retrieval.distributed import prefill_embeddings, runner_for
    from cormorant.retrieval.shard_index import save_sharded_index

    if shards is not None:
        check_shard_count(shards)  # before the corpus is read
    validate(pipeline)
    if out.exists() and not overwrite:  # before any encoding
        raise CormorantError(f"{out} already exists (use --overwrite to replace it)")
    runner = runner_for(ray, actors, gpus_per_actor) \
        if ray is not None or actors != 1 or gpus_per_actor else None
    corpus = _load(dataset, documents, long_documents).corpus
    start = time.perf_counter()
    if shards is not None:
        save_sharded_index(pipeline, corpus, out, shards, overwrite=overwrite, runner=runner)
    else:
        if runner is not None:
            prefill_embeddings(pipeline, corpus, runner)
        save_index(pipeline, corpus, out, overwrite=overwrite)
    typer.echo(f"indexed {len(corpus):,} documents for {pipeline} in"
               f" {time.perf_counter() - start:.1f}s -> {out}")


IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="Index directory.")]


@index_app.command("add")
def index_add(index: IndexOpt,
              documents: Annotated[Path, typer.Option(
                  "--documents", "-d", help="JSON lines, one document per line: {\"_id\","
                                            " \"title\", \"text\", ...} (BEIR's corpus.jsonl"
                                            " format).")],
              batch_size: Annotated[int, typer.Option(
                  help="Documents per write (each is durable once written).")] = 1000,
              ) -> None:
    """Add documents to an index; a document whose id is already there replaces it.

    Every stage kind takes writes (bm25, bm25.lucene, dense with any FAISS kind, chamfer,
    muvera) except seal, whose suffix array is built over the whole corpus: build such an
    index again. One process writes to an index at a time: stop a 'cormorant serve' of it
    first.

    The whole file is read and checked before anything is written. Searches (cormorant
    search, a server started later) see the documents at once; 'index merge' folds them into
    the index's own files.
    """
    from cormorant.console import progress
    from cormorant.data.beir import read_corpus_jsonl
    from cormorant.retrieval.assemble import open_index

    if batch_size < 1:
        raise CormorantError(f"--batch-size must be at least 1, got {batch_size}")
    corpus = read_corpus_jsonl(documents)
    count = sum(1 for _ in corpus)  # read it all first: a bad line writes nothing
    if not count:
        raise CormorantError(f"{documents} holds no documents")
    start = time.perf_counter()
    with open_index(index, write=True) as handle, \
            progress(f"adding {count:,} documents", total=count, unit="doc") as bar:
        for batch in corpus.batches(batch_size):
            handle.live.add(batch)
            bar.update(len(batch))
        total = handle.live.count
    typer.echo(f"added {count:,} documents in {time.perf_counter() - start:.1f}s;"
               f" {index} holds {total:,}")


@index_app.command("delete")
def index_delete(index: IndexOpt,
                 ids: Annotated[Path, typer.Option(
                     "--ids", help="Document ids to delete, one per line ('-': standard"
                                   " input).")],
                 ) -> None:
    """Delete documents from an index by id; ids it does not hold are reported."""
    from cormorant.retrieval.assemble import open_index

    wanted = _read_ids(ids)
    with open_index(index, write=True) as handle:
        result = handle.live.delete(wanted)
        total = handle.live.count
    if result.not_found:
        shown = ", ".join(result.not_found[:5]) + (" ..." if len(result.not_found) > 5 else "")
        typer.echo(f"{len(result.not_found):,} id(s) not in the index: {shown}", err=True)
    typer.echo(f"deleted {len(result.changed):,} documents; {index} holds {total:,}")


@index_app.command("merge")
def index_merge(index: IndexOpt,
                retrain: Annotated[bool | None, typer.Option(
                    "--retrain/--no-retrain",
                    help="Learn IVF centroids and PQ codebooks again from the documents now"
                         " held.  [default: once the collection is 4x what they learnt"
                         " from]", show_default=False)] = None,
                ) -> None:
    """Write the index again as one segment per stage, deleted documents gone, and swap it
    into place. Nothing is encoded again; searches during the merge see the old index."""
    from cormorant.retrieval.assemble import open_index

    start = time.perf_counter()
    with open_index(index, write=True) as handle:
        handle.live.merge(retrain=retrain)
        total = handle.live.count
    typer.echo(f"merged {index} ({total:,} documents) in {time.perf_counter() - start:.1f}s")


def _read_ids(path: Path) -> list[str]:
    from cormorant.data.files import read_text_file

    text = sys.stdin.read() if str(path) == "-" else read_text_file(path, "ids file")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise CormorantError(f"{path} names no document ids")
    return ids


@app.command()
def search(index: Annotated[Path, typer.Option("--index", "-i", help="Index directory.")],
           query: Annotated[list[str] | None, typer.Argument(
               help="Query texts; '-' reads one query per line from stdin.", show_default=False)] = None,
           topics: Annotated[str | None, typer.Option(
               "--topics", "-t", help="Queries to search: a tsv (id<TAB>text), jsonl, TREC topics"
                                      " file, a dataset folder or irds:<id>.")] = None,
           split: Annotated[str | None, typer.Option(
               help="With a dataset folder or irds:<id> as --topics: only this split's queries.")] = None,
           output: Annotated[Path | None, typer.Option(
               "--output", "-o", help="Write a TREC run file here instead of printing.")] = None,
           tag: Annotated[str, typer.Option(help="The run's tag (last column of --output).")] = "cormorant",
           k: Annotated[int | None, typer.Option(
               "-k", help="Results per query.  [default: 10 printed, 1000 with --output]",
               show_default=False)] = None,
           batch_size: Annotated[int, typer.Option(help="Queries searched at once.")] = 64,
           pipeline: Annotated[str | None, typer.Option(
               "--pipeline", "-p", help="Re-compose the index's stages (default: as built).")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
           ) -> None:
    """Search an index: print the top-k documents per query, or write a TREC run.

    Examples: cormorant search -i indexes/scifact "vitamin d";
    cormorant search -i indexes/scifact --topics queries.tsv --output run.trec --tag bm25
    """
    queries = _search_queries(query, topics, split)
    k = k if k is not None else (1000 if output else 10)
    if k < 1:
        raise CormorantError(f"-k must be at least 1, got {k}")
    if batch_size < 1:
        raise CormorantError(f"--batch-size must be at least 1, got {batch_size}")
    if output is not None:
        _check_output(output, overwrite, "--output")
        if not tag or any(ch.isspace() for ch in tag):
            raise CormorantError(f"--tag must be one word, got {tag!r}")
    from cormorant.retrieval.assemble import open_index

    handle = open_index(index, pipeline)
    _note_encodings(handle)
    run = _search_batches(handle.pipeline, queries, k, batch_size)
    if output is not None:
        run.to_trec(output, tag=tag)
        typer.echo(f"{len(run):,} queries, {sum(map(len, run.values())):,} results -> {output}",
                   err=True)
        return
    _print_hits(handle, queries, run, as_json)


def _note_encodings(handle) -> None:  # noqa: ANN001
    """Say on stderr when a stage encodes queries otherwise than its documents were (another
    backend or precision: allowed, and worth knowing when reading the scores)."""
    for owner in handle.live.owners.values():
        found = getattr(owner, "encodings", None)
        if found and found["queries"] != found["documents"]:
            side = {k: "/".join(v.values()) for k, v in found.items() if k in ("queries",
                                                                             "documents")}
            typer.echo(f"note: {owner.name} encodes queries with {side['queries']}, its"
                       f" documents were encoded with {side['documents']}", err=True)


def _search_queries(query: list[str] | None, topics: str | None, split: str | None) -> dict[str, str]:
    """Queries from the command line, stdin ('-') or a topics source; exactly one of them."""
    if topics is not None and query:
        raise CormorantError("give query texts or --topics, not both")
    if topics is not None:
        from cormorant.data.topics import read_topics

        return read_topics(topics, split)
    if split is not None:
        raise CormorantError("--split picks queries of a --topics dataset")
    if not query:
        raise CormorantError("give one or more query texts, '-' to read them from stdin,"
                             " or --topics FILE")
    if query == ["-"]:
        query = [line.strip() for line in sys.stdin if line.strip()]
        if not query:
            raise CormorantError("no queries on stdin")
    return {str(i): q for i, q in enumerate(query)}


def _search_batches(stage, queries: dict[str, str], k: int, batch_size: int):  # noqa: ANN001, ANN202
    """Search ``queries`` ``batch_size`` at a time with a labelled progress bar."""
    from cormorant.console import progress
    from cormorant.types import Run

    ids = list(queries)
    run = Run()
    with progress(f"searching {len(ids):,} queries", total=len(ids), unit="query") as bar:
        for start in range(0, len(ids), batch_size):
            batch = {q: queries[q] for q in ids[start:start + batch_size]}
            run.update(stage.search(batch, k=k))
            bar.update(len(batch))
    return run


def _print_hits(handle, queries: dict[str, str], run, as_json: bool) -> None:  # noqa: ANN001
    docs = handle.live.get_many([d for hits in run.values() for d in hits])
    results = []
    for qid, text in queries.items():
        hits = [{"rank": r, "doc_id": d, "score": s,
                 "title": docs[d].title if d in docs else "",
                 "text": docs[d].text if d in docs else ""}
                for r, (d, s) in enumerate(run.ranked(qid), start=1)]
        results.append({"query": text, "hits": hits})
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    for result in results:
        typer.echo(f"# {result['query']}")
        for hit in result["hits"]:
            snippet = " ".join(f"{hit['title']} {hit['text']}".split())[:100]
            typer.echo(f"{hit['rank']:>3}  {hit['score']:9.4f}  {hit['doc_id']:<16} {snippet}")


def _check_output(path: Path, overwrite: bool, flag: str) -> None:
    """An output file is never replaced unless the user says so; a device or a pipe
    (``/dev/stdout``) holds no file to lose, so writing through it needs no --overwrite."""
    if str(path) != "-" and path.is_file() and not overwrite:
        raise CormorantError(f"{flag} {path} already exists (use --overwrite to replace it)")


@app.command()
def stages(name: Annotated[list[str] | None, typer.Argument(
        help="Stages to describe (default: every registered stage).")] = None) -> None:
    """List pipeline stages with their parameters: type, default, whether it is fixed when the
    index is built ([build]) or may change per query ([query]), and what it does."""
    from cormorant import registry
    from cormorant.stage_help import describe

    typer.echo("\n\n".join(describe(n) for n in (name or registry.stage_names())))


@app.command("eval")
def eval_(dataset: Annotated[list[Path] | None, typer.Option(
              "--dataset", "-d", help="Dataset folder; repeat for several.")] = None,
          pipeline: Annotated[list[str] | None, typer.Option(
              "--pipeline", "-p", help=PipelineHelp + " Repeat for several.")] = None,
          run: Annotated[list[Path] | None, typer.Option(
              "--run", "-r", help="A TREC run file to score (yours, or from 'search --output' or"
                                  " 'fuse'); repeat for several. One dataset, or --qrels.")] = None,
          qrels: Annotated[Path | None, typer.Option(
              help="Score --run files against this qrels file (TREC or BEIR tsv) instead of a"
                   " dataset's split.")] = None,
          split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
          experiment: Annotated[Path | None, typer.Option(
              help="YAML/JSON experiment file (datasets, pipelines, runs, baseline, ...).")] = None,
          baseline: Annotated[str | None, typer.Option(
              help="Pipeline or run file the others are tested against (paired t-test and"
                   " randomisation test, Holm-corrected).")] = None,
          report: Annotated[Path | None, typer.Option(
              help="Write a report: .md (figures beside it) or self-contained .html.")] = None,
          index: Annotated[Path | None, typer.Option(
              help="Use this index instead of building the pipeline (one dataset).")] = None,
          allow_mismatch: Annotated[bool, typer.Option(
              "--allow-mismatch", help="Score an --index even if it was built from another corpus"
                                       " or lacks judged documents.")] = False,
          measure: Annotated[list[str] | None, typer.Option(
              "--measure", "-m", help="ir-measures name; repeat for several."
                                      "  [default: nDCG@10, RR@10, R@100]")] = None,
          depth: Annotated[int, typer.Option(help="Results per query that are scored.")] = 1000,
          average: Annotated[str, typer.Option(
              help="Which queries a mean is over: 'judged' (every judged query, no results count"
                   " 0: trec_eval -c, TREC, Pyserini) or 'retrieved' (judged queries with"
                   " results: BEIR, MTEB).")] = "judged",
          interp_extrap: Annotated[bool, typer.Option(
              "--interp-extrap", help="Also score interpolation vs extrapolation queries.")] = False,
          train_split: Annotated[str, typer.Option(help="Training split for --interp-extrap.")] = "train",
          buckets: Annotated[int, typer.Option(help="Query clusters for --interp-extrap.")] = 5,
          seed: Annotated[int, typer.Option(help="Seed of the --interp-extrap clustering.")] = 0,
          split_out: Annotated[Path | None, typer.Option(
              help="Write each dataset's interpolation/extrapolation folds here for reuse.")] = None,
          json_out: Annotated[Path | None, typer.Option(
              "--save-json", "--json", help="Write results JSON to this file.")] = None,
          markdown: Annotated[Path | None, typer.Option(help="Write a Markdown table.")] = None,
          save_run: Annotated[Path | None, typer.Option(
              help="Write the TREC run of the one dataset and pipeline here.")] = None,
          runs_dir: Annotated[Path | None, typer.Option(help="Write every TREC run here.")] = None,
          overwrite: Annotated[bool, typer.Option(
              help="Let --save-run replace an existing file.")] = False,
          cache: Annotated[bool, typer.Option(help="Reuse cached runs.")] = True,
          documents: DocumentsOpt = None, long_documents: LongOpt = False) -> None:
    """Evaluate pipelines or run files on datasets with ir-measures (nDCG@10, RR@10, R@100 by
    default).

    With one dataset and one pipeline (or run), --save-json writes {dataset, split, pipeline,
    metrics, per_query, timing}; with several it writes {results: [...], significance: [...],
    interp_extrap: {...}}.
    """
    if save_run is not None:
        _check_output(save_run, overwrite, "--save-run")
    if qrels is not None and (dataset or experiment):
        raise CormorantError("--qrels replaces --dataset; give one of them")
    if qrels is not None and not run:
        raise CormorantError("--qrels scores run files: give --run RUN")
    from cormorant.data.files import atomic_write, output_target
    from cormorant.eval.experiment import DatasetSpec, Experiment, InterpExtrapConfig, run_experiment
    from cormorant.eval.harness import markdown_table

    if experiment is not None:
        exp = Experiment.from_file(experiment)
    else:
        if not dataset and qrels is None:
            raise CormorantError("give --dataset (repeatable), --qrels FILE or --experiment FILE")
        specs = [_QrelsSpec(qrels, split)] if qrels is not None else \
            [DatasetSpec(d, documents, long_documents) for d in dataset or []]
        exp = Experiment(
            datasets=specs,  # type: ignore[arg-type]
            pipelines=pipeline or ([] if run else ["bm25"]), runs=list(run or []),
            split=split, baseline=baseline, average=average,
            measures=measure or Experiment.__dataclass_fields__["measures"].default_factory(),
            depth=depth, runs_dir=runs_dir, use_cache=cache,
            interp_extrap=InterpExtrapConfig(train_split, buckets, seed, out=split_out)
            if interp_extrap else None)
    exp.latency = exp.latency or report is not None  # the report plots the spread
    exp.validate()
    for out in (json_out, markdown, save_run, report):
        if out is not None:
            output_target(out)  # a directory or a path under a file: say so before the work
    if index is not None:
        results = [_eval_index(exp, index, pipeline[0] if pipeline else None, allow_mismatch)]
        payload = results[0].to_json()
        comparisons: list = []
    else:
        outcome = run_experiment(exp)
        results, comparisons = outcome.results, outcome.comparisons
        single = len(results) == 1 and not outcome.regimes
        payload = results[0].to_json() if single else outcome.to_json()
        if report:
            from cormorant.eval.report import write_report

            write_report(outcome, report)
    table = markdown_table(results, comparisons)
    typer.echo(table, nl=False)
    if json_out:
        with atomic_write(json_out) as handle:
            json.dump(payload, handle, indent=2)
    if markdown:
        with atomic_write(markdown) as handle:
            handle.write(table)
    if save_run:
        if len(results) != 1:
            raise CormorantError("--save-run takes one dataset and one pipeline; use --runs-dir")
        results[0].run.to_trec(save_run, tag=_tag(results[0].pipeline))


def _tag(system: str) -> str:
    """A run tag (one word) from a pipeline string."""
    slug = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in system).strip("_")
    return slug[:40] or "cormorant"


class _QrelsSpec:
    """A qrels file standing in for a dataset when only run files are scored."""

    def __init__(self, path: Path, split: str) -> None:
        self.path, self.split = path, split

    def load(self):  # noqa: ANN201
        from cormorant.data.trec import read_qrels
        from cormorant.types import Corpus, Dataset, Split

        judged = read_qrels(self.path)
        name = self.path.name.split(".")[0]
        return Dataset(name, Corpus.from_documents([], name=name), [self.split],
                       lambda _: Split({}, judged), self.path)


@app.command()
def fuse(runs: Annotated[list[Path], typer.Option(
             "--runs", help="Run files to fuse (TREC): --runs A B C, or --runs A --runs B.")],
         output: Annotated[Path, typer.Option("--output", "-o", help="The fused TREC run to write.")],
         method: Annotated[str, typer.Option(
             help="rrf, isr, combsum, wsum, combmnz, wmnz, combanz, combmax, combmin or combmed.")] = "rrf",
         norm: Annotated[str, typer.Option(
             help="Per-query normalisation before a score method: none, minmax, max, sum, zscore,"
                  " rank (rrf and isr fuse ranks and ignore it).")] = "none",
         weights: Annotated[list[float] | None, typer.Option(
             help="One weight per run (rrf, isr, combsum/wsum, wmnz): --weights 0.3 0.7.")] = None,
         rrf_k: Annotated[int, typer.Option("--rrf-k", help="rrf's rank offset.")] = 60,
         k: Annotated[int, typer.Option("-k", help="Results kept per query.")] = 1000,
         tag: Annotated[str, typer.Option(help="The fused run's tag.")] = "fused",
         optimize: Annotated[str | None, typer.Option(
             help="Choose the weights that maximise this measure (e.g. nDCG@10) on --dataset's"
                  " --split queries, by grid search, then fuse every query with them.")] = None,
         dataset: Annotated[Path | None, typer.Option(
             "--dataset", "-d", help="--optimize: the dataset whose judgments pick the weights.")] = None,
         split: Annotated[str, typer.Option(help="--optimize: the split used (a dev split).")] = "dev",
         step: Annotated[float, typer.Option(help="--optimize: grid step of the weights.")] = 0.1,
         overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
         ) -> None:
    """Fuse TREC run files (as pyserini.fusion and ranx.fuse do) into one run.

    Example: cormorant fuse --runs bm25.trec dense.trec --method rrf --output fused.trec
    """
    from cormorant.fusion import check
    from cormorant.fusion import fuse as fuse_runs

    if len(runs) < 2:
        raise CormorantError(f"--runs needs at least two run files, got {len(runs)}")
    check(method, norm, weights if optimize is None else [1.0] * len(runs), len(runs))
    if optimize is not None and weights is not None:
        raise CormorantError("give --weights or --optimize, not both")
    if optimize is not None and dataset is None:
        raise CormorantError("--optimize needs --dataset (and --split) to judge the weights")
    if k < 1:
        raise CormorantError(f"-k must be at least 1, got {k}")
    _check_output(output, overwrite, "--output")
    from cormorant.types import Run

    loaded = [Run.from_trec(path) for path in runs]
    if optimize is not None:
        from cormorant.eval.fusion_weights import optimize_weights

        weights, best = optimize_weights(loaded, method, norm, optimize, _load(dataset).split(split),
                                         step=step, k=rrf_k)
        typer.echo(f"weights {' '.join(f'{w:g}' for w in weights)}: {optimize} {best:.4f}"
                   f" on {dataset} {split}", err=True)
    fused = fuse_runs(loaded, method, norm, weights, k=rrf_k).topk(k)
    fused.to_trec(output, tag=tag)
    typer.echo(f"fused {len(runs)} runs with {method}: {len(fused):,} queries -> {output}", err=True)


@app.command()
@command_options(TrainConfig)  # every option flagged cli=True in TrainConfig, with its help
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML/JSON file with any of these options (and more: see"
                               " docs/training.md); command-line options win.")] = None,
    **options: object,
) -> None:
    """Train a retriever (or a cross-encoder re-ranker) and write a model folder.

    The result works as 'dense(model=OUT)' (or 'rerank(model=OUT)') in any pipeline. Progress,
    loss and dev nDCG@10 are logged to OUT/training/ (CSV and TensorBoard); the best dev
    checkpoint is kept; OUT appears only when training finishes.
    """
    from cormorant.training.trainer import is_main_process
    from cormorant.training.trainer import train as run_training

    given = {name: value for name, value in options.items() if value is not None}
    settings = TrainConfig.from_file(config, **given) if config is not None \
        else TrainConfig.from_dict(given)
    result = run_training(settings)
    if not is_main_process():
        return  # torchrun's other ranks: the main process reports
    best = max((v for _, v in result.dev_history), default=None)
    stopped = f" of {result.planned_steps} (time budget)" if result.planned_steps else ""
    typer.echo(f"trained {settings.negatives if settings.kind == 'bi-encoder' else settings.kind}"
               f" for {result.steps}{stopped} steps in {result.seconds:.0f}s"
               + (f", best dev nDCG@10 {best:.4f}" if best is not None else "")
               + (f", best dev loss {result.best_dev_loss:.4f}"
                  if result.best_dev_loss is not None else "")
               + f" -> {result.out}")


@data_app.command("negatives")
def data_negatives(
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Negatives JSONL to write.")],
    method: Annotated[str, typer.Option(help="random, bm25 or dense.")] = "bm25",
    split: Annotated[str, typer.Option(help="Split whose queries get negatives.")] = "train",
    num_negatives: Annotated[int, typer.Option(help="Negatives kept per query.")] = 8,
    range_min: Annotated[int, typer.Option(help="Skip this many best surviving candidates.")] = 0,
    range_max: Annotated[int | None, typer.Option(help="Read the retriever this deep.")] = None,
    relative_margin: Annotated[float | None, typer.Option(
        help="Drop candidates scoring above (1 - r) x the weakest positive.")] = None,
    absolute_margin: Annotated[float | None, typer.Option(
        help="Drop candidates scoring above the weakest positive minus a.")] = None,
    model: Annotated[str | None, typer.Option(help="dense: the mining model.")] = None,
    cross_encoder: Annotated[str | None, typer.Option(
        help="Re-score candidates with this cross-encoder before the margin filters.")] = None,
    sampling: Annotated[str, typer.Option(help="top or random among the survivors.")] = "top",
    seed: Annotated[int, typer.Option(help="Seed for random sampling.")] = 0,
) -> None:
    """Mine hard negatives for a split and write them as JSONL that 'train' reads back."""
    from cormorant.training.data import TrainingSet
    from cormorant.training.negatives import MiningConfig, mine

    if sampling not in ("top", "random"):
        raise CormorantError(f"--sampling must be top or random, got {sampling!r}")
    data = TrainingSet.load(dataset, split)
    config = MiningConfig(num_negatives, range_min, range_max, relative_margin, absolute_margin,
                          sampling, cross_encoder, model, seed)
    negatives = mine(data, method, config)
    negatives.save(out)
    kept = sum(len(v) for v in negatives.by_query.values())
    typer.echo(f"{kept:,} negatives for {len(negatives):,} queries -> {out}")


@data_app.command("synth-queries")
def data_synth_queries(
    dataset: DatasetOpt,
    examples: Annotated[Path, typer.Option(help="JSONL of 1-8 examples: {\"query\", \"document\"}"
                                                " or {\"query\", \"doc_id\"}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (BEIR layout).")],
    llm: Annotated[str, typer.Option(help="BACKEND:MODEL, e.g. transformers:smollm2,"
                                          " openai:NAME (with --llm-url).")] = "transformers:smollm2",
    llm_url: Annotated[str | None, typer.Option(help="openai backend: the server's /v1 URL.")] = None,
    per_doc: Annotated[int, typer.Option(help="Sampled queries per document.")] = 8,
    doc_words: Annotated[int, typer.Option(
        help="Words of each document in its prompt (small models stay on topic with fewer).")] = 120,
    example_words: Annotated[int, typer.Option(
        help="Words of each example's document in the prompt.")] = 80,
    max_docs: Annotated[int | None, typer.Option(help="A seeded sample of this many documents.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    filter_pipeline: Annotated[str, typer.Option(
        help="Round-trip filter retriever (whole corpus).")] = "bm25",
    filter_k: Annotated[int, typer.Option(
        help="Keep a query if its document is in the top k (0: keep all).")] = 1,
    split: Annotated[str, typer.Option(help="Split name of the written qrels.")] = "train",
    seed: Annotated[int, typer.Option(help="Seed for document sampling and decoding.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Write synthetic training queries for a corpus from a few examples (Promptagator).

    The output folder is a BEIR dataset that 'cormorant train --dataset OUT --split train' reads.
    Generations are cached: re-running with another --filter-pipeline generates nothing new.
    """
    from cormorant.llm import load_llm
    from cormorant.retrieval.assemble import build_pipeline, validate
    from cormorant.training import synthetic as syn

    if out.exists() and not overwrite:
        raise CormorantError(f"{out} already exists (use --overwrite to replace it)")
    config = syn.SynthConfig(per_doc=per_doc, temperature=temperature, max_docs=max_docs,
                             doc_words=doc_words, example_words=example_words,
                             filter_k=filter_k, seed=seed)
    if filter_k:
        validate(filter_pipeline)
    ds = _load(dataset)
    shots = syn.load_examples(examples, ds.corpus)
    options = {"base_url": llm_url} if llm_url else {}
    model = load_llm(llm, **options)
    docs = syn.pick_documents(ds.corpus, config.max_docs, seed)
    result = syn.generate_queries(model, shots, docs, config)
    if filter_k:
        result = syn.round_trip_filter(result, build_pipeline(filter_pipeline, ds.corpus), filter_k)
    syn.write_dataset(result, ds.corpus, out, split, overwrite,
                      {"llm": llm, "filter": filter_pipeline if filter_k else None,
                       "filter_k": filter_k, "documents": len(docs), "per_doc": per_doc,
                       "doc_words": doc_words, "example_words": example_words,
                       "examples": len(shots)})
    typer.echo(f"{len(result.queries):,} queries kept of {result.generated:,} generated"
               f" ({result.duplicates} duplicates, {result.filtered} filtered) -> {out}")


def _eval_index(exp, index: Path, pipeline: str | None, allow_mismatch: bool = False):  # noqa: ANN001, ANN202
    """Evaluate an index directory (built earlier) on the experiment's one dataset; ``pipeline``
    re-composes its stages (default: as built). An index of another collection is refused
    unless ``allow_mismatch``."""
    from cormorant.eval.harness import run_split
    from cormorant.retrieval.assemble import check_index_fits, open_index

    if len(exp.datasets) != 1 or len(exp.pipelines) > 1 or exp.runs:
        raise CormorantError("--index evaluates one dataset with one pipeline")
    ds = exp.datasets[0].load()
    judged = ds.split(exp.split).qrels
    start = time.perf_counter()
    handle = open_index(index, pipeline)
    if not allow_mismatch:
        check_index_fits(handle, ds.corpus.name, {d for docs in judged.values() for d in docs})
    return run_split(handle.pipeline, ds, exp.split, depth=exp.depth, measures=exp.measures,
                     build_seconds=time.perf_counter() - start, average=exp.average)


@app.command()
def serve(index: Annotated[list[str] | None, typer.Option(
              "--index", "-i", help="NAME=PATH of an index directory to serve; repeat for several.")] = None,
          config: Annotated[Path | None, typer.Option(
              "--config", "-c", help="YAML settings: indexes, allowed pipelines, API keys (sha256),"
                                     " limits, micro-batching. Environment: CORMORANT_SERVICE_*.")] = None,
          host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
          open_reads: Annotated[bool | None, typer.Option(
              "--open-reads/--closed-reads", help="Let searches and reads go without a key"
                                                  " (writes always need one).  [default: from"
                                                  " --config, else closed]",
              show_default=False)] = None,
          hash_key: Annotated[bool, typer.Option(
              "--hash-key", help="Read an API key on stdin, print the sha256 for the config, exit.")] = False,
          ray: Annotated[str | None, typer.Option(
              "--ray", help="Serve on Ray Serve: 'auto' (the cluster this host belongs to),"
                            " HOST:PORT, or 'local' (start one here). Each shard of a sharded"
                            " index becomes a writer and --replicas readers; needs the [ray]"
                            " extra.  [default: in this process]", show_default=False)] = None,
          replicas: Annotated[int, typer.Option(
              help="With --ray: reader replicas per shard.")] = 1,
          replica_cpus: Annotated[float, typer.Option(
              help="With --ray: CPUs Ray reserves for each replica.")] = 1.0,
          ) -> None:
    """Serve indexes over HTTP: search, documents, live writes (see README, Serving).

    Example: cormorant serve --index scifact=indexes/scifact --config service.yaml --port 8000
    """
    try:
        import uvicorn

        from cormorant.service import create_app, load_settings
        from cormorant.service.auth import hash_key as digest
    except ModuleNotFoundError as exc:
        from cormorant.errors import MissingExtraError

        raise MissingExtraError("cormorant serve", "service", exc) from None
    if hash_key:
        key = sys.stdin.readline().strip()
        if not key:
            raise CormorantError("--hash-key reads the key from stdin; got an empty line")
        typer.echo(digest(key))
        return
    extra = dict(_name_path(entry) for entry in index or [])
    settings = load_settings(config, extra_indexes=extra, host=host, port=port,
                             open_reads=open_reads)
    if not settings.indexes:
        raise CormorantError("nothing to serve: give --index NAME=PATH or indexes in --config")
    if ray is not None:
        _serve_on_ray(settings, ray, replicas, replica_cpus)
        return
    if replicas != 1 or replica_cpus != 1.0:
        raise CormorantError("--replicas and --replica-cpus need --ray")
    application = create_app(settings)  # checks every path before the port opens
    uvicorn.run(application, host=settings.host, port=settings.port, access_log=False,
                log_level=settings.log_level, timeout_graceful_shutdown=int(settings.request_timeout_s) + 5)


def _serve_on_ray(settings: ServiceSettings, address: str, replicas: int, replica_cpus: float) -> None:
    """``serve --ray``: token authentication set before Ray is imported, then Ray Serve."""
    from cormorant.service.ray_auth import token_auth

    token_auth(address)
    try:
        from cormorant.service.ray_serve import serve_on_ray
    except ModuleNotFoundError as exc:
        from cormorant.errors import MissingExtraError

        raise MissingExtraError("cormorant serve --ray", "ray", exc) from None
    serve_on_ray(settings, address, replicas, replica_cpus)


def _name_path(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise CormorantError(f"--index takes NAME=PATH, got {entry!r}")
    if not Path(path).is_dir():
        raise CormorantError(f"--index {name}: {path} is not a directory")
    return name.strip(), path.strip()


cache_app = typer.Typer(help="Inspect and prune the on-disk cache ($CORMORANT_CACHE).",
                        no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info() -> None:
    """Print the cache root, its size limit, and entries and size per kind."""
    from cormorant import cache

    report = cache.info()
    limit = "none" if report.limit is None else cache.format_size(report.limit)
    typer.echo(f"root   {report.root}")
    typer.echo(f"limit  {limit} (${cache.LIMIT_ENV}, least recently used evicted first)")
    typer.echo(f"{'kind':<12} {'entries':>8} {'size':>11}")
    for kind, (count, size) in report.kinds.items():
        typer.echo(f"{kind:<12} {count:>8} {cache.format_size(size):>11}")
    count = sum(c for c, _ in report.kinds.values())
    typer.echo(f"{'total':<12} {count:>8} {cache.format_size(report.total):>11}")
    if report.partial:
        typer.echo(f"({report.partial} unfinished write(s) in progress or left by a crash)")


@cache_app.command("prune")
def cache_prune(
    max_size: Annotated[str | None, typer.Option(
        help="Remove least recently used entries until the cache (or --kind) is at most this"
             " size, e.g. 5G or 500M. Default: the configured limit.")] = None,
    kind: Annotated[str | None, typer.Option(
        help="Only measure and remove entries of this kind (see `cormorant cache info`).")] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Remove every entry (of --kind, if given).")] = False,
) -> None:
    """Remove least recently used cache entries; with no option, cut back to the limit."""
    from cormorant import cache

    if everything and max_size is not None:
        raise CormorantError("give --all or --max-size, not both")
    if kind is not None and kind not in set(cache.KINDS) | {e.kind for e in cache.entries()}:
        raise CormorantError(f"unknown cache kind {kind!r}; kinds: {', '.join(cache.KINDS)}")
    budget = None if max_size is None else cache.parse_size(max_size)
    removed = cache.prune(max_size=budget, kind=kind, everything=everything)
    freed = cache.format_size(sum(e.size for e in removed))
    typer.echo(f"removed {len(removed)} entries ({freed});"
               f" cache now {cache.format_size(cache.info().total)}")


MULTI_VALUE = {"fuse": ("--runs", "--weights"), "eval": ("--run", "-r")}
"""Options that take several values after one flag (``--runs A B C``), as Pyserini's and
ranx's users write them; click takes one value per flag, so the command line is rewritten to
``--runs A --runs B --runs C`` before click reads it."""


def normalize_argv(argv: list[str]) -> list[str]:
    """``-v``/``--verbose`` anywhere moves to the front (where the app's callback reads it),
    and the options of :data:`MULTI_VALUE` take every value up to the next option.

    Example:
        >>> normalize_argv(["fuse", "--runs", "a", "b", "-v", "--method", "rrf"])
        ['-v', 'fuse', '--runs', 'a', '--runs', 'b', '--method', 'rrf']
    """
    if "--" in argv:
        head, tail = argv[:argv.index("--")], argv[argv.index("--"):]
    else:
        head, tail = argv, []
    verbose = [a for a in head if a in ("-v", "--verbose")]
    head = [a for a in head if a not in ("-v", "--verbose")]
    command = next((a for a in head if not a.startswith("-")), None)
    multi = MULTI_VALUE.get(command or "", ())
    out: list[str] = []
    flag = None
    for arg in head:
        if arg in multi:
            flag = arg
            out.append(arg)
            continue
        if flag is not None and not arg.startswith("-") and out[-1] != flag:
            out.extend([flag, arg])
            continue
        if arg.startswith("-") and not _is_number(arg):
            flag = None
        out.append(arg)
    return verbose[:1] + out + tail


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES,
                errno.EPERM}


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        if any(a == "--run-file" or a.startswith("--run-file=") for a in sys.argv[1:]):
            raise CormorantError("--run-file is now --save-run (it writes this evaluation's run,"
                                 " and never over an existing file without --overwrite);"
                                 " --run RUN reads a run to score")
        code = app(args=normalize_argv(sys.argv[1:]), prog_name="cormorant",
                   standalone_mode=False)  # returns typer.Exit's code instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except CormorantError as exc:
        typer.echo(f"error: {exc}", err=True)
        if getattr(exc, "caret", None) is not None:
            typer.echo(" " * (len("error: ") + exc.caret) + "^", err=True)  # type: ignore[attr-defined]
        sys.exit(2)
    except OSError as exc:  # the disk, not the program: full, read-only, no permission
        if exc.errno not in _DISK_ERRORS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors, raised because standalone_mode is off
        _exit_for_click_error(exc)
        raise


def _exit_for_click_error(exc: Exception) -> None:
    """Exit as click would for its own exceptions, but a usage error is the project's one
    ``error:`` line (with click's "did you mean", and where to find help), exit status 2.

    Newer typer releases raise their own vendored copies of click's exception classes, so
    both are matched (a usage error has ``show`` and ``exit_code`` in either)."""
    import click

    if isinstance(exc, click.exceptions.Exit | typer.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, click.ClickException) or (hasattr(exc, "show")
                                                 and isinstance(getattr(exc, "exit_code", None), int)):
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "cormorant"
        typer.echo(f"error: {message} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    if isinstance(exc, click.exceptions.Abort | typer.Abort):
        sys.exit(1)


if __name__ == "__main__":
    main()
