"""SmolLM2-135M-Instruct through llama-cpp-python (the GGUF as shipped, Q4_1) against the same
model through transformers (the GGUF de-quantised to float32): seconds per generated text.

The prompts are what ``cormorant data synth-queries`` sends: the few-shot examples of
``benchmarks/promptagator-scifact-examples.jsonl`` and one SciFact document, sampled at the
Promptagator settings (temperature 0.7, top-p 0.95, up to 32 new tokens, stop at a newline).
No generation cache; one warm-up generation per backend; the backends alternate per round.
Needs ``make llama-cpp``.

    python benchmarks/bench_llm_backends.py            # 8 prompts, 3 rounds
"""

from __future__ import annotations

import json
import statistics
import time

from _common import REPO, dataset_path, parser, write_json

BACKENDS = ("llama-cpp:smollm2", "transformers:smollm2")


def main() -> None:
    args = parser("SmolLM2 generation: llama-cpp against transformers", "llm-backends.json")
    args.add_argument("--prompts", type=int, default=8)
    opts = args.parse_args()
    from cormorant.data import DatasetSpec
    from cormorant.llm import GenerationParams, load_llm
    from cormorant.training.synthetic import SynthConfig, few_shot_prompt, load_examples

    corpus = DatasetSpec(dataset_path("scifact")).load().corpus
    examples = load_examples(REPO / "benchmarks" / "promptagator-scifact-examples.jsonl", corpus)
    docs = list(corpus)[:opts.prompts]
    prompts = [few_shot_prompt(examples, d.contents) for d in docs]
    synth = SynthConfig()
    params = GenerationParams(max_new_tokens=synth.max_new_tokens, temperature=synth.temperature,
                              top_p=synth.top_p, stop=("\n",), seed=0)
    models = {spec: load_llm(spec, cache=False) for spec in BACKENDS}
    for model in models.values():
        model.generate(prompts[:1], params)
    seconds: dict[str, list[float]] = {spec: [] for spec in BACKENDS}
    samples: dict[str, list[str]] = {}
    for _ in range(1 if opts.quick else 3):
        for spec, model in models.items():
            start = time.perf_counter()
            samples[spec] = model.generate(prompts, params)
            seconds[spec].append((time.perf_counter() - start) / len(prompts))
    rows = {spec: {"seconds_per_generation": round(statistics.median(v), 3),
                   "samples": samples[spec][:3]} for spec, v in seconds.items()}
    peer = rows["transformers:smollm2"]["seconds_per_generation"]
    for row in rows.values():
        row["vs_transformers"] = round(row["seconds_per_generation"] / peer, 3)
    write_json(opts.out, {"prompts": len(prompts), "prompt_chars": round(
        statistics.mean(len(p) for p in prompts)), "rows": rows})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
