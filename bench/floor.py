"""The framework floor: a bare FastAPI app that parses the JSON body with orjson and answers a constant, no model.

Served by bench.server under the same uvicorn flags as the service, it is what HTTP + ASGI + JSON parsing cost on
this machine; the service's single-item figures are printed as ratios to it.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

_CONSTANT = orjson.dumps({"model": "floor", "version": 0, "mean": [[0.0, 0.0]], "scale": [[1.0, 1.0]]})

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/encode")
@app.post("/decode")
async def parse_and_answer(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(_CONSTANT, media_type="application/json")


@app.get("/readyz")
async def readyz() -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")
