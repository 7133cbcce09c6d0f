"""The ``cormorant`` command line: data, index build, search, eval.

Every user mistake ends in a one-line ``error: ...`` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cormorant.errors import CormorantError

app = typer.Typer(help="Cormorant: dense retrieval and ranking. Index, search and evaluate "
                       "collections with BM25, dense FAISS indexes and pipelines of them.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)
index_app = typer.Typer(help="Build indexes.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="Dataset folder: BEIR"
                                          " (corpus.jsonl[.gz]), MS MARCO tsv or BRIGHT domain.")]
DocumentsOpt = Annotated[Path | None, typer.Option(
    help="BRIGHT only: the documents file (jsonl or parquet with id, content).")]
LongOpt = Annotated[bool, typer.Option(
    "--long-documents", help="BRIGHT only: judge against gold_ids_long (long-document variant).")]
PipelineHelp = ("Pipeline, e.g. 'bm25', 'dense(model=PATH)', 'rrf(bm25, dense) % 100',"
                " 'bm25 % 100 >> dense'. Stages: bm25, bm25.lucene, rm3, dense; rrf, combsum.")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def _load(dataset: Path, documents: Path | None = None, long_documents: bool = False):  # noqa: ANN202
    from cormorant.data import load_dataset

    options: dict[str, object] = {"documents": documents} if documents else {}
    if long_documents:
        options["long_documents"] = True
    return load_dataset(dataset, **options)


@data_app.command("info")
def data_info(dataset: Annotated[Path, typer.Argument(help="Dataset folder.")],
              documents: DocumentsOpt = None, long_documents: LongOpt = False) -> None:
    """Validate a dataset and print its corpus size and per-split counts."""
    ds = _load(dataset, documents, long_documents)
    typer.echo(f"{ds.name}: {len(ds.corpus):,} documents")
    for name in ds.split_names:
        split = ds.split(name)
        judgments = sum(len(v) for v in split.qrels.values())
        typer.echo(f"  {name}: {len(split.queries):,} queries, {judgments:,} judgments"
                   + (f", {sum(map(len, split.excluded.values())):,} exclusions"
                      if split.excluded else ""))


@index_app.command("build")
def index_build(dataset: DatasetOpt,
                out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
                pipeline: Annotated[str, typer.Option("--pipeline", "-p", help=PipelineHelp)] = "bm25",
                documents: DocumentsOpt = None, long_documents: LongOpt = False,
                overwrite: Annotated[bool, typer.Option(help="Replace an existing index.")] = False,
                ) -> None:
    """Index a dataset's corpus for every stage of a pipeline (written atomically)."""
    from cormorant.retrieval.assemble import save_index

    corpus = _load(dataset, documents, long_documents).corpus
    start = time.perf_counter()
    save_index(pipeline, corpus, out, overwrite=overwrite)
    typer.echo(f"indexed {len(corpus):,} documents for {pipeline} in"
               f" {time.perf_counter() - start:.1f}s -> {out}")


@app.command()
def search(query: Annotated[list[str], typer.Argument(help="One or more query texts.")],
           index: Annotated[Path, typer.Option("--index", "-i", help="Index directory.")],
           k: Annotated[int, typer.Option("-k", help="Results per query.")] = 10,
           pipeline: Annotated[str | None, typer.Option(
               "--pipeline", "-p", help="Re-compose the index's stages (default: as built).")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           ) -> None:
    """Search an index and print the top-k documents per query."""
    from cormorant.retrieval.assemble import open_index

    if k < 1:
        raise CormorantError(f"-k must be at least 1, got {k}")
    handle = open_index(index, pipeline)
    queries = {str(i): q for i, q in enumerate(query)}
    run = handle.pipeline.search(queries, k=k)
    docs = handle.docs.get_many([d for hits in run.values() for d in hits])
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


@app.command("eval")
def eval_(dataset: DatasetOpt,
          pipeline: Annotated[str, typer.Option("--pipeline", "-p", help=PipelineHelp)] = "bm25",
          split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
          index: Annotated[Path | None, typer.Option(
              help="Use this index instead of building the pipeline over the corpus.")] = None,
          measure: Annotated[list[str] | None, typer.Option(
              "--measure", "-m", help="ir-measures name; repeat for several.")] = None,
          depth: Annotated[int, typer.Option(help="Results per query that are scored.")] = 1000,
          json_out: Annotated[Path | None, typer.Option("--json", help="Write results JSON.")] = None,
          markdown: Annotated[Path | None, typer.Option(help="Write a Markdown table.")] = None,
          run_file: Annotated[Path | None, typer.Option(help="Write the TREC run.")] = None,
          documents: DocumentsOpt = None, long_documents: LongOpt = False) -> None:
    """Evaluate a pipeline on a dataset split with ir-measures (nDCG@10, RR@10, R@100)."""
    from cormorant.data.files import atomic_write
    from cormorant.eval.harness import markdown_table, run_split
    from cormorant.eval.measures import DEFAULT_MEASURES, parse_measures
    from cormorant.retrieval.assemble import build_pipeline, open_index

    if depth < 1:
        raise CormorantError(f"--depth must be at least 1, got {depth}")
    measures = measure or list(DEFAULT_MEASURES)
    parse_measures(measures)  # fail on a typo before any slow work
    ds = _load(dataset, documents, long_documents)
    ds.split(split)  # fail on a missing split before building anything
    start = time.perf_counter()
    stage = open_index(index, pipeline).pipeline if index else build_pipeline(pipeline, ds.corpus)
    result = run_split(stage, ds, split, depth=depth, measures=measures,
                       build_seconds=time.perf_counter() - start)
    table = markdown_table([result])
    typer.echo(table, nl=False)
    if json_out:
        with atomic_write(json_out) as handle:
            json.dump(result.to_json(), handle, indent=2)
    if markdown:
        with atomic_write(markdown) as handle:
            handle.write(table)
    if run_file:
        result.run.to_trec(run_file)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        app(standalone_mode=False)
    except CormorantError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors, raised because standalone_mode is off
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
