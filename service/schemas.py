"""Request and response models, the error body included. They document the API in OpenAPI; the hot path parses
bodies with orjson and numpy (service/codecs.py) and never validates through these models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service import errors
from service.codecs import MAX_SCORE_SAMPLES, MIN_ITEMS, SAMPLE_COUNT, SCORE_SAMPLES, SEED_LIMIT

# One image: 784 numbers in [0, 1], 28 rows of 28 numbers, or a base64 PNG (28x28, grayscale or colour).
Image = list[float] | list[list[float]] | str
_PIXELS = [0.0] * 784
_PNG_28 = "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAHElEQVR42mNgGEqAEZnzH02ACZ/OUcnBKDm0AACmWAEg+yGwAgAAAABJRU5ErkJggg=="  # a "1"


def _example(**example: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


IMAGES_NPY = "(N, 28, 28) or (N, 784) array, uint8 0-255 or float32 0-1"  # how an .npy body of images looks


class EncodeRequest(BaseModel):
    """Also accepted: `Content-Type: application/x-npy`, an (N, 28, 28) or (N, 784) array, uint8 or float32."""

    model_config = _example(images=[_PIXELS])
    images: list[Image] = Field(description="1 to MAX_ITEMS_PER_REQUEST images, formats may be mixed")
    digit: int | None = Field(None, ge=0, le=9, description="conditional models only (cvae): the digit of every "
                              "image; without one the cvae marginalises the label (docs/api.md)")


class DecodeRequest(BaseModel):
    """Also accepted: `Content-Type: application/x-npy`, a float32 (N, K) array."""

    model_config = _example(latents=[[0.0, 0.0], [1.0, -0.5]])
    latents: list[list[float]] = Field(description="rows of the model's latent_dim numbers")
    digit: int | None = Field(None, ge=0, le=9, description="conditional models only (cvae): the digit of every "
                              "latent; without one the cvae marginalises the label (docs/api.md)")


class ReconstructRequest(BaseModel):
    """With an application/x-npy body (images as for /encode), `sample`, `seed` and `digit` are query parameters."""

    model_config = _example(images=[_PNG_28], sample=True, seed=7)
    images: list[Image]
    # null means absent (the default) for every field of every body: one rule, service/operations.py
    sample: bool | None = Field(False, description="draw z from the posterior instead of taking its mean")
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT - 1, description="seed of the posterior noise; random when null")
    digit: int | None = Field(None, ge=0, le=9, description="conditional models only (cvae): the digit of every "
                              "image; without one the cvae marginalises the label (docs/api.md)")


class SampleRequest(BaseModel):
    model_config = _example(count=SAMPLE_COUNT, seed=0)
    count: int | None = Field(SAMPLE_COUNT, ge=MIN_ITEMS,
                       description="how many draws, at most MAX_ITEMS_PER_REQUEST (the protocol's name)")
    n: int | None = Field(None, ge=MIN_ITEMS, description="the same as count (its earlier name, still accepted)")
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT - 1, description="the same seed gives the same result")
    digit: int | None = Field(None, ge=0, le=9, description="draw this digit (0-9): from the model's latent "
                              "distribution of the digit, or natively for a conditional model (cvae); without a "
                              "model named, LATENTSERVE_DEFAULT_DIGIT_MODEL (cvae) serves it when loaded")


class ScoreRequest(BaseModel):
    """With an application/x-npy body (images as for /encode), `samples` and `seed` are query parameters."""

    model_config = _example(images=[_PNG_28], samples=100, seed=0)
    images: list[Image]
    samples: int | None = Field(SCORE_SAMPLES, ge=1, le=MAX_SCORE_SAMPLES,
                         description="importance samples per image (VAE); images x samples at most MAX_SCORE_WORK")
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT - 1,
                             description="seed of the importance samples; an image's draws depend only on it and the "
                                         "image")


class Served(BaseModel):
    model: str = Field(description="the model that served the request")
    version: int = Field(description="its version")


class EncodeResponse(Served):
    model_config = _example(model="vae", version=1, mean=[[0.12, -1.3]], scale=[[0.05, 0.07]])
    mean: list[list[float]] = Field(description="posterior means, (N, K)")
    scale: list[list[float]] | None = Field(description="posterior standard deviations, (N, K); null for an AE")


class DecodeResponse(Served):
    model_config = _example(model="vae", version=1, images=[[0.0] * 784])
    images: list[list[float]] = Field(description="pixel means in [0, 1], (N, 784)")


class ReconstructResponse(Served):
    images: list[list[float]]
    mean: list[list[float]]
    scale: list[list[float]] | None


class SampleResponse(Served):
    latents: list[list[float]] = Field(description="draws from the prior, (n, K)")
    images: list[list[float]] = Field(description="their decoded pixel means, (n, 784)")


class ScoreResponse(Served):
    model_config = _example(model="vae", version=3, samples=100, log_likelihood=[-95.2], percentile=[48.1],
                            outlier=[False], elbo=[-99.0], reconstruction=[-91.7], kl=[7.3])
    samples: int = Field(description="importance samples per image")
    log_likelihood: list[float] = Field(
        description="per image, nats: PPCA's exact Gaussian log density, the VAE's importance-weighted estimate of "
                    "log p(x), the AE's Bernoulli log-likelihood of its reconstruction (a score, not a density)")
    percentile: list[float] | None = Field(
        description="per image, 0-100: the share of the reference set that is less typical (null without one)")
    outlier: list[bool] | None = Field(description="per image, the artifact's outlier rule (null without one)")
    elbo: list[float] | None = Field(None, description="VAE only: the evidence lower bound, nats")
    reconstruction: list[float] | None = Field(None, description="VAE only: E_q log p(x | z), nats")
    kl: list[float] | None = Field(None, description="VAE only: KL(q(z | x) || p(z)), nats")


DefaultReason = Literal["pinned", "highest", "previous"]
DEFAULT_REASON = ("pinned: the version in the model's DEFAULT file; highest: no pin, the highest loaded version wins; "
                  "previous: the pin cannot be followed (pin_error says why) and the default before it stays")


class ModelInfo(BaseModel):
    name: str
    kind: str = Field(description="ppca, ae or vae")
    latent_dim: int
    versions: list[int]
    default_version: int = Field(description="the version requests without ?version= get")
    default_reason: DefaultReason = Field(description=DEFAULT_REASON)
    pin_error: str | None = Field(description="why the model's DEFAULT file is not followed, when it is not")
    default: bool = Field(description="whether requests without ?model= go to this model")
    batch_sizes: dict[str, int] = Field(
        description="most items per forward pass of each operation of the default version, picked at warm-up")


class RefusedVersion(BaseModel):
    name: str
    version: int
    reason: str


class Limits(BaseModel):
    max_items_per_request: int = Field(description="most images, latents or samples one request may carry (413 above)")
    max_body_bytes: int = Field(description="largest request body accepted (413 above)")
    max_score_work: int = Field(description="most images x samples one /score request may ask for (413 above)")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default_model: str
    refused: list[RefusedVersion] = Field(description="versions whose manifest or checksums failed")
    limits: Limits = Field(description="what one request may carry: split larger inputs (the Python client does)")


class ModelDetail(BaseModel):
    name: str
    default_version: int | None = Field(description="null when every version was refused")
    default_reason: DefaultReason | None = Field(description=DEFAULT_REASON)
    pin: int | None = Field(description="the version the model's DEFAULT file names; null without one")
    pin_error: str | None = Field(description="why the pin is not followed (a missing or refused version)")
    versions: list[dict[str, Any]] = Field(description="the manifest.json of each loaded version")
    reports: dict[str, list[str]] = Field(description="per loaded version, the report PNGs its report route serves")
    refused: list[RefusedVersion]


class VersionRef(BaseModel):
    name: str
    version: int


class ReloadResponse(BaseModel):
    loaded: list[VersionRef]
    dropped: list[VersionRef]
    refused: list[RefusedVersion]
    serving: dict[str, int] = Field(description="each model's default version after the reload")


class Status(BaseModel):
    status: str


class Limit(BaseModel):
    name: str = Field(description="the setting: max_items_per_request or max_body_bytes")
    value: int = Field(description="its value on this server")
    got: int | None = Field(None, description="what the request had (items or declared bytes), when known")


class WhoAmI(BaseModel):
    key: str | None = Field(description="the key's id from the keys file ('default' for LATENTSERVE_API_KEY); "
                                        "null when the service has no key configured")
    scopes: list[str] = Field(description="what the key may call: 'infer' (inference and read routes), 'admin'")


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong, for people")
    type: str = Field(description="a stable machine-readable kind, e.g. invalid_input")
    limit: Limit | None = Field(None, description="413 only: the limit the request went over, as data")
    request_id: str | None = Field(None, description="the request's X-Request-ID (the client's, or one generated)")


def _error(error: type[errors.ServiceError], detail: str, headers: dict | None = None) -> dict[int, dict]:
    """The OpenAPI response of one error class (its status and type), with an example detail."""
    response: dict = {
        "model": ErrorBody,
        "content": {"application/json": {"example": {"detail": detail, "type": error.type}}},
    }
    if headers:
        response["headers"] = headers
    return {error.status: response}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
AUTH_ERRORS = {
    **_error(errors.Unauthorized, "missing or invalid API key; send 'Authorization: Bearer <key>'"),
    **_error(errors.Forbidden, "key 'billing' lacks the 'admin' scope this route needs"),
    **_error(errors.RateLimited, "key 'billing' is over its rate of 20 requests/s (burst 40); retry in 1 s",
             _RETRY_AFTER),
}
INFERENCE_ERRORS = {
    **AUTH_ERRORS,
    **_error(errors.UnknownModel, "model 'ppca' is not loaded; loaded models: ae, pca (kind ppca), vae"),
    **_error(errors.PayloadTooLarge, "2000 images exceed the limit of 1024 per request"),
    **_error(errors.UnsupportedMediaType, "content type 'text/plain' is not supported"),
    **_error(errors.InvalidInput, "each of the images must be 784 numbers or 28 rows of 28 numbers"),
    **_error(errors.Internal, "internal"),
    **_error(errors.Overloaded, "queue full (65536 items waiting, bound 65536); retry later", _RETRY_AFTER),
    **_error(errors.Timeout, "request waited longer than 10 s"),
}
ADMIN_ERRORS = _error(errors.UnsupportedMediaType, "admin requests must be sent with Content-Type: application/json "
                                                   "or an X-Requested-With header")
# The explorer's data routes (service/pages.py): a path names the model, version and file.
PAGE_DATA_ERRORS = {
    **AUTH_ERRORS,
    **_error(errors.NotFound, "vae/1 has no report file 'x.png'; it has: latent.png"),
    **_error(errors.InvalidInput, "version must be a positive integer in ASCII digits, got 'x'"),
    **_error(errors.Unavailable, "the service is starting", _RETRY_AFTER),
}


def request_body(model: type[BaseModel], npy: str | None) -> dict:
    """`openapi_extra` documenting a body that the handler reads itself (JSON, and .npy where `npy` says how). The
    body is optional when every field has a default: the handler then takes an empty body as `{}`."""
    schema = model.model_json_schema()
    content: dict = {"application/json": {"schema": schema}}
    if npy:
        content["application/x-npy"] = {"schema": {"type": "string", "format": "binary", "description": npy}}
    return {"requestBody": {"required": bool(schema.get("required")), "content": content}}


QUERY_PARAMETERS = [
    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "model name; default LATENTSERVE_DEFAULT_MODEL"},
    {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "model version; default the model's default (the highest loaded, or its DEFAULT pin)"},
]


def image_replies(model: type[BaseModel]) -> dict:
    """The 200 reply of an endpoint returning images: JSON, or a PNG grid / a float32 (N, 784) .npy by Accept."""
    return {200: {"model": model, "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
    }, "description": "JSON by default; `Accept: image/png` gives one PNG grid, `application/x-npy` the images "
                      "as float32 (N, 784). Non-JSON replies carry X-Model and X-Model-Version headers."}}

