"""Experiments over several pipelines, run caching, significance and reports."""

import json
import shutil
import subprocess
import sys

import pytest

from cormorant.data import DatasetSpec
from cormorant.errors import CormorantError
from cormorant.eval.experiment import Experiment, run_experiment
from cormorant.eval.report import write_report
from tests.conftest import write_beir

PIPELINES = ["bm25", "bm25(k1=2.0, b=1.0)", "rrf(bm25, bm25(k1=2.0, b=1.0))"]


@pytest.fixture
def experiment(tmp_path, isolated_cache):
    dataset = write_beir(tmp_path / "tiny")
    return Experiment([DatasetSpec(dataset)], PIPELINES, baseline="bm25", permutations=200,
                      runs_dir=tmp_path / "runs")


def test_every_pair_is_evaluated_compared_and_written(experiment, tmp_path):
    outcome = run_experiment(experiment)
    assert [r.pipeline for r in outcome.results] == PIPELINES
    assert len(outcome.comparisons) == 2 * 3  # two systems x three measures, against bm25
    assert all(c.baseline == "bm25" and c.wins + c.ties + c.losses == 3
               for c in outcome.comparisons)
    assert all(c.randomization_p_adjusted >= c.randomization_p for c in outcome.comparisons)
    curve = outcome.curves[("tiny", "bm25")]
    assert list(curve) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert curve[1000] == 1.0 and curve[1] <= curve[2] <= curve[5]
    assert len(list((tmp_path / "runs").glob("*.trec"))) == 3


def test_latency_is_repeated_one_query_timings_with_their_spread(experiment):
    assert "latency_timings" not in run_experiment(experiment).results[0].timing  # asked only
    experiment.latency, experiment.use_cache = True, False
    timing = run_experiment(experiment).results[0].timing
    assert timing["latency_timings"] >= 3
    assert 0 < timing["latency_ms_p10"] <= timing["latency_ms_p50"] <= timing["latency_ms_p90"]


def test_runs_are_cached_on_disk(experiment, monkeypatch):
    first = run_experiment(experiment)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a pipeline whose run was cached")

    import cormorant.retrieval.assemble as assemble

    monkeypatch.setattr(assemble, "build_pipeline", no_build)
    again = run_experiment(experiment)
    assert [r.metrics for r in again.results] == [r.metrics for r in first.results]


def test_bad_experiments_fail_before_any_work(tmp_path):
    spec = [DatasetSpec(tmp_path)]
    with pytest.raises(CormorantError, match="baseline 'dense' is not one of"):
        Experiment(spec, ["bm25"], baseline="dense").validate()
    with pytest.raises(CormorantError, match="unknown stage"):
        Experiment(spec, ["bm25", "colbert"]).validate()
    with pytest.raises(CormorantError, match="list of pipeline strings"):
        Experiment(spec, "bm25").validate()
    (tmp_path / "exp.yaml").write_text("datasets: [x]\npipelines: [bm25]\ncolour: red\n")
    with pytest.raises(CormorantError, match="unknown keys"):
        Experiment.from_file(tmp_path / "exp.yaml")


def test_yaml_experiment_paths_are_relative_to_the_file(tmp_path):
    write_beir(tmp_path / "tiny")
    (tmp_path / "exp.yaml").write_text(
        "datasets: [tiny]\npipelines: [bm25, 'rrf(bm25, bm25(k1=2.0))']\nbaseline: bm25\n")
    exp = Experiment.from_file(tmp_path / "exp.yaml")
    assert exp.datasets[0].path == tmp_path / "tiny"
    assert exp.pipelines == ["bm25", "rrf(bm25, bm25(k1=2.0))"]


def test_markdown_report_with_figures(experiment, tmp_path):
    outcome = run_experiment(experiment)
    path = write_report(outcome, tmp_path / "report.md")
    text = path.read_text()
    assert "| pipeline | nDCG@10 | RR@10 | R@100 | queries | ms/query (batch) |" \
           " one query, ms: median (10th-90th pct.) |" in text
    assert "## Significance against the baseline" in text
    # The legend follows the first results table, not the end of the page.
    assert text.index("Bold: best value") < text.index("## Significance against the baseline")
    assert "0.0000 /" not in text  # tiny p-values print as <0.0001
    figures = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert figures == ["tiny-latency.png", "tiny-per-query.png", "tiny-recall.png"]
    for name in figures:
        assert (tmp_path / "report_files" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"(report_files/{name})" in text
    assert json.loads((tmp_path / "report.json").read_text())["baseline"] == "bm25"


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(experiment, tmp_path):
    outcome = run_experiment(experiment)
    page = write_report(outcome, tmp_path / "report.html")
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    # Chromium's DOM dump after layout: the table and every image decoded (naturalWidth > 0).
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.title = 'tables=' + document.querySelectorAll('table').length
    + ' images=' + imgs.length + ' decoded=' + imgs.filter(i => i.naturalWidth > 0).length
    + ' cells=' + document.querySelectorAll('td').length;
});
</script></body>"""))
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    title = result.stdout.split("<title>")[1].split("</title>")[0]
    assert title.startswith("tables=2 images=3 decoded=3"), title
    assert int(title.split("cells=")[1]) > 20
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", f"--user-data-dir={tmp_path / 'p2'}",
                    f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_cli_multi_eval_with_report(tmp_path, isolated_cache):
    dataset = write_beir(tmp_path / "tiny")
    result = subprocess.run(
        [sys.executable, "-m", "cormorant.cli", "eval", "-d", dataset, "-p", "bm25",
         "-p", "bm25(k1=2.0)", "--baseline", "bm25", "--report", tmp_path / "r.md",
         "--json", tmp_path / "r.json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    payload = json.loads((tmp_path / "r.json").read_text())
    assert [r["pipeline"] for r in payload["results"]] == ["bm25", "bm25(k1=2.0)"]
    assert {c["measure"] for c in payload["significance"]} == {"nDCG@10", "RR@10", "R@100"}
    assert (tmp_path / "r.md").is_file()


def test_pipelines_over_the_same_stages_get_their_own_runs(tmp_path, isolated_cache):
    dataset = write_beir(tmp_path / "tiny")
    exp = Experiment([DatasetSpec(dataset)], ["rrf(bm25, bm25(k1=2.0))",
                                              "bm25 % 1 >> bm25(k1=2.0)"])
    fused, chained = run_experiment(exp).results
    assert all(len(docs) <= 1 for docs in chained.run.values())
    assert any(len(docs) > 1 for docs in fused.run.values())


def test_p_values_and_colours_in_reports():
    from cormorant.eval.plots import color
    from cormorant.eval.report import format_p

    assert format_p(0.0) == "<0.0001" and format_p(0.00009) == "<0.0001"
    assert format_p(0.0001) == "0.0001" and format_p(0.5) == "0.5000"
    # A system keeps its colour whatever else is plotted beside it.
    assert color("rrf(bm25, dense)") == color("rrf(bm25, dense)")
    assert len({color(s) for s in ("bm25", "dense", "rrf(bm25, dense)", "chamfer", "muvera")}) > 1


def test_pipelines_that_read_text_share_one_document_store(tmp_path, isolated_cache,
                                                           monkeypatch):
    from cormorant.index import docstore

    created = []
    real = docstore.DocStore.create
    monkeypatch.setattr(docstore.DocStore, "create",
                        staticmethod(lambda *a, **k: created.append(a[0]) or real(*a, **k)))
    pipelines = [f"bm25 >> genqr_ensemble(llm=echo:x, n={n}, feedback=prf) >> bm25"
                 for n in (1, 2)]
    run_experiment(Experiment([DatasetSpec(write_beir(tmp_path / "tiny"))], pipelines,
                              use_cache=False))
    assert len(created) == 1  # the corpus written once for both pipelines' feedback texts
