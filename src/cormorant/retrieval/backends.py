"""Inference backends for transformer encoders: torch, ONNX Runtime and OpenVINO, fp32 or int8.

A sentence-transformers model (bi-encoder, token encoder or cross-encoder) keeps its tokenizer,
pooling and normalisation in torch; only the transformer inside is swapped for an exported
graph. The export is made once per (model fingerprint, task, backend, precision) and kept in
the cache (kind ``exports``); nothing is downloaded.

Why not sentence-transformers' own ``backend="onnx"``: it goes through optimum-onnx, whose only
release (0.1.0) pins ``transformers<4.58`` (this project runs transformers 5), and OpenVINO
through optimum-intel, which pulls another torch. So the export is ``torch.onnx.export``, the
int8 weights are ONNX Runtime's ``quantize_dynamic``/``quantize_static``, and OpenVINO reads
the ONNX file; all three are the libraries' own, only the glue is here.

Example:
    >>> model = load_sentence_transformer(resolve_model(None))  # doctest: +SKIP
    >>> accelerate(model, Runtime("onnx", "int8"), fingerprint)  # doctest: +SKIP
    >>> model.encode(["what is a cormorant"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cormorant.errors import CormorantError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZATIONS = ("none", "int8", "int8-static")
DTYPES = ("float32", "float16", "bfloat16")
# How exports are made (exporter, attention path, fusions, quantiser settings): another recipe
# gives other vectors, so it is part of the identity of what an exported encoder produced.
EXPORT_RECIPE = 2


@dataclass(frozen=True)
class Runtime:
    """How a model runs: ``backend`` (torch, onnx, openvino), ``quantize`` (none; int8: dynamic
    int8 weights and activations; int8-static: activation ranges calibrated on a sample) and,
    with torch on CUDA, ``dtype`` (float16, bfloat16).

    Example:
        >>> Runtime("onnx", "int8").settings
        {'backend': 'onnx', 'quantize': 'int8', 'export': 2}
    """

    backend: str = "torch"
    quantize: str = "none"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name, value, allowed in (("backend", self.backend, BACKENDS),
                                     ("quantize", self.quantize, QUANTIZATIONS),
                                     ("dtype", self.dtype, DTYPES)):
            if value not in allowed:
                raise CormorantError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.backend == "torch" and self.quantize != "none":
            raise CormorantError("quantize=int8 needs backend=onnx or backend=openvino")
        if self.backend != "torch" and self.dtype != "float32":
            raise CormorantError(f"dtype={self.dtype} is for backend=torch on CUDA")

    @property
    def settings(self) -> dict[str, Any]:
        """What changes the vectors (recorded in meta.json and cache keys); the default
        (torch, fp32) records nothing, so entries made before backends existed still match."""
        found: dict[str, Any] = {}
        if self.backend != "torch" or self.quantize != "none":
            found = {"backend": self.backend, "quantize": self.quantize, "export": EXPORT_RECIPE}
        if self.dtype != "float32":
            found["dtype"] = self.dtype
        return found


def accelerate(model: Any, runtime: Runtime, fingerprint: str) -> None:
    """Run ``model`` (a loaded ``SentenceTransformer`` or ``CrossEncoder``) on ``runtime``.

    torch: on CUDA, casts to ``dtype``; on a CPU fp16/bf16 is refused (slower, and worse).
    onnx/openvino: the transformer module's network is replaced by the exported graph.
    """
    if runtime.backend == "torch":
        _cast(model, runtime.dtype)
        return
    from cormorant.retrieval.exports import RuntimeModel, exported, transformer_module

    module = transformer_module(model)
    # ONNX Runtime runs its fused graph; OpenVINO reads the plain one (no contrib ops).
    path = exported(module, fingerprint, runtime.quantize, fused=runtime.backend == "onnx")
    module.model = RuntimeModel(path, module.model, runtime.backend)


def _cast(model: Any, dtype: str) -> None:
    if dtype == "float32":
        return
    if model.device.type != "cuda":
        raise CormorantError(f"dtype={dtype} needs a CUDA device (on a CPU use backend=onnx)")
    import torch

    model.to(getattr(torch, dtype))


