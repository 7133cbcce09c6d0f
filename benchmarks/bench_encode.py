"""Encoding throughput: cormorant's encoder against bare sentence-transformers.

Both encode the same SciFact abstracts with all-MiniLM-L6-v2 (batch 64, normalised), in
alternating runs so machine drift hits both alike. Goal: ratio >= 0.95.
"""

from __future__ import annotations

from _common import dataset_path, interleaved, parser, write_json


def main() -> None:
    args = parser(__doc__.split("\n\n")[0], "encode.json").parse_args()
    from sentence_transformers import SentenceTransformer

    from cormorant.data import load_dataset
    from cormorant.retrieval.encoders import SentenceTransformerEncoder, resolve_model

    n, repeats = (128, 3) if args.quick else (512, 5)
    texts = [d.contents for _, d in zip(range(n), load_dataset(dataset_path("scifact")).corpus)]
    ours = SentenceTransformerEncoder(batch_size=64, show_progress=False)
    bare = SentenceTransformer(resolve_model(None), device="cpu")
    seconds = interleaved({
        "cormorant": lambda: ours.encode_documents(texts),
        "sentence_transformers": lambda: bare.encode(texts, batch_size=64,
                                                     normalize_embeddings=True),
    }, repeats)
    rate = {name: n / s for name, s in seconds.items()}
    ratio = rate["cormorant"] / rate["sentence_transformers"]
    print(f"docs/s: cormorant {rate['cormorant']:.1f}, bare {rate['sentence_transformers']:.1f},"
          f" ratio {ratio:.3f}")
    write_json(args.out, {"benchmark": "encode", "quick": args.quick, "docs": n,
                          "repeats": repeats, "docs_per_s": rate, "ratio": ratio})


if __name__ == "__main__":
    main()
