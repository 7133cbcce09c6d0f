"""Encoders exported to ONNX once per model, quantised to int8 by ONNX Runtime, and run by
ONNX Runtime or OpenVINO in place of the torch network (see :mod:`cormorant.retrieval.backends`).

Example:
    >>> module = transformer_module(model)  # doctest: +SKIP
    >>> exported(module, model_fingerprint(path), "int8")  # doctest: +SKIP
    PosixPath('~/.cache/cormorant/exports/3f0c.../model.onnx')
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cormorant.errors import CormorantError, MissingExtraError
from cormorant.retrieval.backends import EXPORT_RECIPE

log = logging.getLogger(__name__)

KIND = "exports"
OPSET = 17
MODEL_FILE = "model.onnx"
# Texts the static quantizer measures activation ranges on, when the caller gives none: short
# and long, question and abstract, so the ranges cover what queries and documents produce.
CALIBRATION = [
    "what is a cormorant",
    "does vitamin d help with depression",
    "Vitamin D deficiency is associated with depression in adults across several cohorts.",
    "Cormorants are diving birds that catch fish underwater; fishermen in China trained them.",
    "Statins lower cholesterol and reduce the risk of heart disease in randomised trials of"
    " middle-aged adults, with few adverse events reported over five years of follow-up.",
    "Regular exercise improves mood and reduces symptoms of depression. " * 6,
    "0-dimensional biomaterials show inductive properties.",
    "how many people die of malaria every year",
]


def transformer_module(model: Any) -> Any:
    """The first module of ``model``: the Hugging Face transformer the backends replace."""
    first = model[0] if hasattr(model, "__getitem__") else None
    if first is None or not hasattr(first, "model") or not hasattr(first, "tokenizer"):
        raise CormorantError("backend=onnx/openvino needs a model whose first module is a"
                             " Hugging Face transformer")
    return first


def exported(module: Any, fingerprint: str, quantize: str, fused: bool = False,
             calibration: list[str] | None = None) -> Path:
    """The ONNX file of ``module``'s transformer at ``quantize`` precision, from the cache
    (made and stored there on a miss). ``fused``: ONNX Runtime's transformer fusions applied
    (attention, layer norms, GELU: contrib ops only ONNX Runtime runs). The int8 file is
    quantised from the fp32 one."""
    from cormorant import cache

    _require("onnx", "onnxruntime")
    task = type(module.model).__name__
    name = cache.key({"fingerprint": fingerprint, "task": task, "quantize": quantize,
                      "fused": fused, "recipe": EXPORT_RECIPE, "opset": OPSET,
                      "calibration": calibration
                      if quantize == "int8-static" else None}, length=20)
    found = cache.lookup(KIND, name)
    if found is not None and (found / MODEL_FILE).is_file():
        return found / MODEL_FILE
    with cache.write(KIND, name, directory=True) as tmp:
        if quantize != "none":
            source = exported(module, fingerprint, "none", fused)
            _quantize(source, tmp / MODEL_FILE, quantize, module, calibration or CALIBRATION)
        elif fused:
            fuse(exported(module, fingerprint, "none"), tmp / MODEL_FILE, module.model.config)
        else:
            export_onnx(module, tmp / MODEL_FILE)
    return cache.entry(KIND, name) / MODEL_FILE


def fuse(source: Path, target: Path, config: Any) -> None:
    """ONNX Runtime's transformer optimiser over ``source``: one ``Attention`` op per layer in
    place of a dozen (the unfused mask arithmetic, ``Where``, took a fifth to a quarter of the
    time, measured with ONNX Runtime's profiler), layer norms and GELU fused. A model whose
    graph it does not recognise keeps what was fused (possibly nothing)."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    optimized = optimize_model(str(source), model_type="bert", num_heads=heads,
                               hidden_size=hidden)
    log.info("fused: %s", {k: v for k, v in optimized.get_fused_operator_statistics().items()
                           if v})
    optimized.save_model_to_file(str(target))


def input_names(module: Any) -> list[str]:
    """The tensors the tokenizer gives the network (BERT adds token_type_ids, others not)."""
    names = list(getattr(module.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def export_onnx(module: Any, path: Path) -> None:
    """``module.model`` as an ONNX graph with dynamic batch and sequence axes."""
    names = input_names(module)
    network = FirstOutput(module.model, names).eval()
    # Eager attention traces to the pattern ONNX Runtime fuses into its Attention op; SDPA's
    # traced mask arithmetic is left unfused. Same numbers either way (tests compare).
    previous = _attention(module.model, "eager")
    # Two texts of different lengths: the trace sees a padded batch, as encoding will.
    sample = module.tokenizer(["an example", "a somewhat longer example text"], padding=True,
                              return_tensors="pt")
    device = next(module.model.parameters()).device
    args = tuple(sample[n].to(device) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["output"] = {0: "batch"}
    log.info("exporting %s to ONNX (once per model)", type(module.model).__name__)
    with torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript's optimiser per model and
        # gives the same graph for these encoders.
        try:
            torch.onnx.export(network, args, str(path), input_names=names,
                              output_names=["output"], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)
        finally:
            _attention(module.model, previous)


def _attention(model: Any, implementation: str | None) -> str | None:
    """Switch a transformers model's attention implementation; the one it had (None where
    the model cannot switch)."""
    before = getattr(model.config, "_attn_implementation", None)
    if implementation is not None and before is not None and hasattr(model,
                                                                     "set_attn_implementation"):
        try:
            model.set_attn_implementation(implementation)
        except (ValueError, ImportError):  # a model with no eager path keeps its own
            return None
    return before


class FirstOutput(torch.nn.Module):
    """A network returning only its first output (hidden states, or a classifier's logits),
    taking the tokenizer's tensors by position as the ONNX exporter passes them."""

    def __init__(self, network: Any, names: list[str]) -> None:
        super().__init__()
        self.network = network
        self.names = names

    def forward(self, *tensors: Any) -> Any:
        return self.network(**dict(zip(self.names, tensors, strict=True)), return_dict=False)[0]


def _quantize(source: Path, target: Path, quantize: str, module: Any,
              calibration: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if quantize == "int8":
        # Signed int8 weights: ONNX Runtime's advice for x86 with VNNI/AVX512, and what
        # sentence-transformers' own avx512_vnni config uses. DefaultTensorType: shape
        # inference cannot type the outputs of fused contrib ops; they are float.
        import onnx

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return
    _quantize_static(source, target, module, calibration)


def _quantize_static(source: Path, target: Path, module: Any, calibration: list[str]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = input_names(module)
    batches = [module.tokenizer([text], return_tensors="np", truncation=True,
                                max_length=module.max_seq_length) for text in calibration]
    feeds = iter([{n: np.asarray(b[n], dtype=np.int64) for n in names} for b in batches])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    import onnx

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


class RuntimeModel(torch.nn.Module):
    """An exported graph standing where a Hugging Face model stood: same config, takes the
    tokenizer's tensors, returns its first output under both names sentence-transformers reads
    (``last_hidden_state`` for encoders, ``logits`` for cross-encoders)."""

    def __init__(self, path: Path, original: Any, backend: str) -> None:
        super().__init__()
        self.config = original.config
        self.backend = backend
        self.path = path
        # sentence-transformers finds the model's device from its first parameter or buffer.
        self.register_buffer("anchor", torch.zeros(1), persistent=False)
        self._names = _graph_inputs(path)
        self._run = _onnx_runner(path) if backend == "onnx" else _openvino_runner(path)

    def forward(self, **features: Any) -> dict[str, Any]:
        feeds = {n: np.ascontiguousarray(features[n].cpu().numpy(), dtype=np.int64)
                 for n in self._names}
        out = torch.from_numpy(np.ascontiguousarray(self._run(feeds), dtype=np.float32))
        return {"last_hidden_state": out, "logits": out}


def _graph_inputs(path: Path) -> list[str]:
    import onnx  # present wherever the file could be made

    graph = onnx.load(str(path), load_external_data=False).graph
    return [i.name for i in graph.input]


def _onnx_runner(path: Path) -> Any:
    import onnxruntime as ort  # checked by exported()

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def _openvino_runner(path: Path) -> Any:
    _require("openvino")
    import openvino as ov
    # Precision hint f32: OpenVINO would otherwise run bf16 on CPUs that have it, a precision
    # nobody asked for (int8 graphs keep their int8 ops either way).
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    output = compiled.output(0)
    # A request per call: one request is not safe across threads, and dense searches from
    # several (the REST service) at once.
    return lambda feeds: np.asarray(compiled.create_infer_request().infer(feeds)[output])


def _require(*packages: str) -> None:
    import importlib.util

    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(f"backend=onnx/openvino ({package})", "fast")
