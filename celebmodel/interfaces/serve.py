"""One run as an HTTP API: identify the faces of a photo, who is in a video and when, list who
the model knows.

``create_app(run)`` builds the FastAPI app (its OpenAPI page at ``/docs``); ``serve(run)``
runs it with uvicorn, on 127.0.0.1 unless told otherwise. The Recognizer is loaded once (before
serving, or in the app's lifespan) and shared: it is thread-safe (one photo at a time through
detection and the network), the endpoints that use it are plain functions FastAPI runs in its
thread pool, so concurrent requests queue instead of failing. Decoding runs outside its lock.

Status codes, one rule: 400 the upload is not a usable photo (empty, truncated, not an image,
too small, too many pixels), with the same ``"file: problem"`` message as the command line;
401 the API key is missing or wrong; 413 the request body is over the limit (checked on
``Content-Length`` before reading, and on the bytes actually read); 422 the request itself is
malformed (no ``file`` field, a threshold that is not a number); 500 a problem of the run or
the machine (its message, e.g. the face models missing). Errors are JSON
``{"detail": ...}`` (a message; FastAPI's list of field errors for 422), never a traceback.

The API key (``--api-key`` or ``$CELEBMODEL_API_KEY``) is sent in the ``X-API-Key`` header.
``/health`` and the OpenAPI pages stay open, so a load balancer can probe the server; every
other endpoint needs the key when one is set.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Security,
    UploadFile,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from ..albums.album import identify_album, photo_results
from ..data.dataset import name_matches
from ..data.images import load_image
from ..data.videos import DEFAULT_FPS, VideoReader
from ..errors import CelebmodelError, ImageError, ServeError
from ..recognition.recognize import Recognizer
from ..runs.run import Run

API_KEY_ENV = "CELEBMODEL_API_KEY"
API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_MB = 20.0
MAX_VIDEO_SECONDS = 600  # a request waits for its video: ten minutes take about 3 on 2 cores
MB = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# What the API answers (the OpenAPI page shows these) -----------------------------------------


class TopK(BaseModel):
    label: str = Field(description="the person's label (a class of the model)")
    name: str = Field(description="the name shown for them")
    probability: float | None = Field(None, description="class probability (trained runs)")
    similarity: float | None = Field(
        None, description="similarity of their nearest gallery face (gallery models)"
    )


class Evidence(BaseModel):
    label: str
    name: str
    similarity: float = Field(description="cosine similarity of the two embeddings")
    path: str = Field(description="the gallery photo, relative to the run's dataset")
    runner_up: bool
    photo: str | None = Field(None, description="built-in model: the LFW photo's file name")
    link: str | None = Field(None, description="built-in model: the person's page on LFW's site")


class Face(BaseModel):
    box: list[int] = Field(description="x, y, width, height in the photo's pixels")
    confidence: float = Field(description="the face detector's confidence, 0..1")
    known: bool
    label: str = Field(description='the person, or "unknown" when too unlike everyone known')
    name: str | None = Field(description="the name shown for the person; null when unknown")
    nearest: str = Field(description="the closest person's label, even when unknown")
    nearest_name: str = Field(description="the closest person's name, even when unknown")
    match_confidence: float | None = Field(
        description="how rarely strangers score as high as this face (1 - FAR, 0..1); null for "
        "older runs never calibrated against strangers"
    )
    similarity: float = Field(description="raw similarity to the closest person, 0..1")
    score: float = Field(description="the model's own decision scale (see calibration.json)")
    probability: float | None = Field(description="class probability (trained runs, known)")
    top_k: list[TopK] = Field(description="the most likely people (known faces only)")
    evidence: list[Evidence] = Field(description="the closest gallery faces")


class PhotoResult(BaseModel):
    """The same object as ``celebmodel predict --json`` prints for one photo."""

    image: str = Field(description="the uploaded file's name")
    faces: list[Face] = Field(description="every face, left to right")
    error: str | None = Field(description='"no face found", else null')


class Person(BaseModel):
    label: str
    name: str
    photos: int = Field(description="faces of them in the gallery")
    kind: str = Field(
        description='"trained"; "LFW" in the built-in model and copies of it; "added" later'
    )


class People(BaseModel):
    run: str
    total: int = Field(description="people matching the query, on every page")
    offset: int
    limit: int
    people: list[Person]


class Health(BaseModel):
    status: str
    model_loaded: bool
    run: str


class Version(BaseModel):
    celebmodel: str
    run: str
    title: str
    backbone: str
    tensorflow: str
    keras: str
    python: str


class Problem(BaseModel):
    detail: str = Field(description='what is wrong, as "file: problem"')


PHOTO_PROBLEM = {
    "model": Problem,
    "description": "Not a usable photo: empty, truncated, not an image, under 8 px a side, or "
    "too many pixels (a decompression bomb). The message names the file and the problem.",
}
MALFORMED = {"description": "Malformed request: no `file` field, or a field of the wrong type."}
NO_KEY = {"model": Problem, "description": f"`{API_KEY_HEADER}` header missing or wrong."}


# The request size limit ----------------------------------------------------------------------


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413: on its ``Content-Length`` before a
    byte is read, and while it streams (a chunked or lying body is cut off at the limit)."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def message(self, size: int | None = None) -> str:
        told = f"{size:,} bytes" if size is not None else f"over {self.max_bytes:,} bytes"
        return (
            f"request body: too large ({told}; the limit is {self.max_bytes:,} bytes, "
            f"--max-upload-mb {self.max_bytes / MB:g})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self.message(int(length))}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.message())  # FastAPI answers it as raised
            return message

        await self.app(scope, limited, send)


# The app -------------------------------------------------------------------------------------


def _key_guard(api_key: str) -> Callable[..., None]:
    """A dependency refusing requests without ``api_key`` in the ``X-API-Key`` header."""
    header = APIKeyHeader(
        name=API_KEY_HEADER,
        auto_error=False,
        description=f"The server's API key (--api-key or ${API_KEY_ENV}).",
    )
    expected = api_key.encode()

    # A default, not an Annotated hint: ``header`` is local, and this module's annotations
    # are strings that FastAPI resolves against the module's globals.
    def check(key: str | None = Security(header)) -> None:  # noqa: B008
        if key is None or not secrets.compare_digest(key.encode(), expected):
            raise HTTPException(
                401,
                f"{API_KEY_HEADER}: missing or wrong API key",
                headers={"WWW-Authenticate": "APIKey"},
            )

    return check


def _description(max_bytes: int, api_key: bool) -> str:
    key = (
        f"Every endpoint but `/health` needs the API key in the `{API_KEY_HEADER}` header "
        "(401 without it)."
        if api_key
        else "No API key is required (the server was started without one)."
    )
    return (
        "Identify celebrities in photos with one trained celebmodel run.\n\n"
        f"{key}\n\n"
        f"Status codes: **400** the upload is not a usable photo (the message names the file "
        f"and the problem, as the command line does); **401** API key missing or wrong; "
        f"**413** request body over {max_bytes:,} bytes; **422** malformed request (no `file` "
        f"field, a field of the wrong type); **500** a problem of the run or the machine. "
        "Errors are JSON with a `detail` message (for "
        "422, FastAPI's list of field errors).\n\n"
        "Requests are served one photo at a time through the model; concurrent requests "
        "queue."
    )


def _load(app: FastAPI, source: str | Path | Run | Recognizer, top_k: int) -> None:
    """Load (or take) the Recognizer and what ``/people`` lists, with the run's versions."""
    from ..recognition.people import roster

    recognizer = (
        source if isinstance(source, Recognizer) else Recognizer.from_run(source, top_k=top_k)
    ).warm_up()
    app.state.people = [
        {key: row[key] for key in ("label", "name", "photos", "kind")}
        for row in roster(recognizer.run).to_dict("records")
        if not row["removed"]
    ]
    app.state.versions = recognizer.run.versions()
    app.state.recognizer = recognizer


def _current(request: Request) -> Recognizer:
    """The shared Recognizer, reloaded first if the run changed since it was loaded (people
    added, renamed or removed, a new threshold): the API answers as the studio does, without
    a restart. Requests wait while it reloads."""
    state = request.app.state
    recognizer: Recognizer = state.recognizer
    if recognizer.run.versions() != state.versions:
        with state.reloading:
            if recognizer.run.versions() != state.versions:
                _load(request.app, recognizer.run, state.top_k)
    return state.recognizer


def _uploaded(file: UploadFile, max_bytes: int) -> tuple[str, bytes]:
    """An upload's file name and bytes; a 413 past ``max_bytes`` (read no further)."""
    name = Path(file.filename or "").name or "upload"
    data = file.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{name}: too large (over {max_bytes:,} bytes)")
    return name, data


def _identify_routes(guard: list[Any], protected: dict[int, Any], max_bytes: int) -> APIRouter:
    """``POST /identify``: every face of one photo."""
    router = APIRouter()

    @router.post(
        "/identify",
        response_model=PhotoResult,
        response_model_exclude_unset=True,  # what predict --json prints, no added nulls
        dependencies=guard,
        responses={
            400: PHOTO_PROBLEM,
            **protected,
            413: {"model": Problem, "description": "Request body over the size limit."},
            422: MALFORMED,
            500: {"model": Problem, "description": "A problem of the run or the machine."},
        },
        summary="Every face of one photo, named or unknown",
    )
    def identify(
        request: Request,
        file: Annotated[UploadFile, File(description="the photo: JPEG, PNG, GIF, BMP, WebP")],
        threshold: Annotated[
            float | None,
            Form(
                allow_inf_nan=False,
                description="unknown above this score (default: the run's calibrated one)",
            ),
        ] = None,
        min_similarity: Annotated[
            float | None,
            Form(ge=0, le=1, description="trained runs: unknown below this similarity"),
        ] = None,
        min_confidence: Annotated[
            float | None,
            Form(gt=0, lt=1, description="unknown below this match confidence (0..1)"),
        ] = None,
        top_k: Annotated[
            int | None, Form(ge=1, le=1000, description="most likely people listed per face")
        ] = None,
    ) -> dict[str, Any]:
        """The same JSON as `celebmodel predict --json` gives for this photo."""
        from ..scoring.open_set import score_for

        given = [n for n, v in (("threshold", threshold), ("min_similarity", min_similarity),
                                ("min_confidence", min_confidence)) if v is not None]
        if len(given) > 1:
            raise HTTPException(422, f"{', '.join(given)}: give one, not several")
        recognizer = _current(request)
        if min_similarity is not None:
            if recognizer.scoring == "gallery":
                raise HTTPException(422, "min_similarity: this model decides on match "
                                    "confidence; use min_confidence")
            threshold = score_for(min_similarity)
        if min_confidence is not None:
            if recognizer.strangers is None:
                raise HTTPException(422, "min_confidence: this older run has no stranger "
                                    "scores; use min_similarity")
            threshold = recognizer.threshold_for(min_confidence)
        name, data = _uploaded(file, max_bytes)
        try:
            pixels = load_image(data, name=name)
        except ImageError as exc:
            raise HTTPException(400, str(exc)) from None
        album = identify_album(recognizer, [(name, pixels)], threshold, top_k=top_k)
        if album.errors:  # the photo decoded above: this is the run's or the machine's problem
            raise HTTPException(500, album.errors[0]["error"])
        return photo_results(album)[0]

    return router


def _video_routes(guard: list[Any], protected: dict[int, Any], max_bytes: int) -> APIRouter:
    """``POST /identify-video``: who is on screen when, in one video."""
    router = APIRouter()

    @router.post(
        "/identify-video",
        dependencies=guard,
        responses={
            400: {"model": Problem, "description": "Not a video that can be read (not a "
                  "video, no picture, a codec this build cannot decode, no frame)."},
            **protected,
            413: {"model": Problem, "description": "Request body over the size limit, or a "
                  f"video longer than {MAX_VIDEO_SECONDS // 60} minutes."},
            422: MALFORMED,
        },
        summary="Who is in a video, and when: people, their occurrences and tracks",
    )
    def identify_video(
        request: Request,
        file: Annotated[UploadFile, File(description="the video: mp4, mov, mkv, webm, avi")],
        fps: Annotated[
            float, Form(gt=0, le=30, description="frames looked at per second")
        ] = DEFAULT_FPS,
        min_confidence: Annotated[
            float | None,
            Form(gt=0, lt=1, description="unknown below this match confidence (default: "
                 "the model's Strict preset)"),
        ] = None,
    ) -> dict[str, Any]:
        """The same JSON as `celebmodel predict VIDEO --json` gives for this video. Videos
        are processed while the request waits, so their length is limited; longer ones go
        through `celebmodel predict`."""
        from ..errors import VideoError
        from ..video.timeline import identify_video as identify

        recognizer = _current(request)
        threshold = None
        if min_confidence is not None:
            if recognizer.strangers is None:
                raise HTTPException(422, "min_confidence: this older run has no stranger "
                                    "scores")
            threshold = recognizer.threshold_for(min_confidence)
        name, data = _uploaded(file, max_bytes)
        try:
            length = VideoReader(data, name=name).info.duration or 0
            if length > MAX_VIDEO_SECONDS:
                raise HTTPException(413, f"{name}: {length / 60:.1f} minutes, over the API's "
                                    f"{MAX_VIDEO_SECONDS // 60}; use celebmodel predict")
            return identify(recognizer, data, name=name, fps=fps, threshold=threshold).to_dict()
        except VideoError as exc:
            raise HTTPException(400, str(exc)) from None

    return router


def _people_routes(guard: list[Any], protected: dict[int, Any]) -> APIRouter:
    """``GET /people``: who the model knows, a page at a time, with the one name search."""
    router = APIRouter()

    @router.get(
        "/people",
        response_model=People,
        dependencies=guard,
        responses=protected,
        summary="Who the model knows",
    )
    def people(
        request: Request,
        offset: Annotated[int, Query(ge=0, description="people to skip")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="people per page")] = 100,
        q: Annotated[str, Query(description="only names holding every word of this")] = "",
    ) -> dict[str, Any]:
        """Everyone the model can name (people removed from the run are left out), a page at
        a time: ``total`` says how many match, ``offset`` and ``limit`` which are here."""
        recognizer = _current(request)
        everyone = request.app.state.people
        hits = name_matches(q, [p["name"] for p in everyone], [p["label"] for p in everyone])
        found = [p for p, hit in zip(everyone, hits, strict=True) if hit]
        return {
            "run": recognizer.run.name,
            "total": len(found),
            "offset": offset,
            "limit": limit,
            "people": found[offset : offset + limit],
        }

    return router


def _status_routes(guard: list[Any], protected: dict[int, Any]) -> APIRouter:
    """``GET /health`` (no key: for load balancers) and ``GET /version``."""
    router = APIRouter()

    @router.get("/health", response_model=Health, summary="Is the model loaded (no API key)")
    def health(request: Request) -> dict[str, Any]:
        recognizer = getattr(request.app.state, "recognizer", None)
        return {
            "status": "ok" if recognizer is not None else "loading",
            "model_loaded": recognizer is not None,
            "run": recognizer.run.name if recognizer is not None else "",
        }

    @router.get(
        "/version",
        response_model=Version,
        dependencies=guard,
        responses=protected,
        summary="What is running",
    )
    def version(request: Request) -> dict[str, Any]:
        import keras
        import tensorflow as tf

        from .. import __version__

        recognizer: Recognizer = request.app.state.recognizer
        return {
            "celebmodel": __version__,
            "run": recognizer.run.name,
            "title": recognizer.run.title,
            "backbone": recognizer.config.backbone,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": sys.version.split()[0],
        }

    return router


def create_app(
    run: str | Path | Run | Recognizer,
    api_key: str | None = None,
    max_bytes: int = int(DEFAULT_MAX_MB * MB),
    top_k: int = 5,
) -> FastAPI:
    """The API of one run. ``run`` may be a loaded Recognizer (shared) or a run folder (loaded
    when the app starts); either is reloaded when its run changes on disk. ``api_key``:
    required in ``X-API-Key`` when set."""
    from .. import __version__

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_load, app, run, top_k)
        yield

    app = FastAPI(
        title="celebmodel API",
        version=__version__,
        description=_description(max_bytes, bool(api_key)),
        lifespan=lifespan,
    )
    app.state.reloading = threading.Lock()
    app.state.top_k = top_k
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    guard = [Depends(_key_guard(api_key))] if api_key else []
    protected = {401: NO_KEY} if api_key else {}

    @app.exception_handler(CelebmodelError)
    async def celebmodel_error(request: Request, exc: CelebmodelError) -> JSONResponse:
        """A problem of the run or the machine (not of the upload): its message, no trace."""
        return JSONResponse({"detail": str(exc)}, status_code=500)

    app.include_router(_identify_routes(guard, protected, max_bytes))
    app.include_router(_video_routes(guard, protected, max_bytes))
    app.include_router(_people_routes(guard, protected))
    app.include_router(_status_routes(guard, protected))
    return app


# Serving -------------------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or a clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServeError(f"--host {host}: not an address of this machine ({exc})") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from exc
    return sock


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run: str | Path | Run | Recognizer,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_bytes: int = int(DEFAULT_MAX_MB * MB),
    top_k: int = 5,
    log_level: str = "info",
) -> None:
    """Serve ``run`` until interrupted. The run is loaded and the address bound first, so a
    bad run or a busy port is one clear error, not a server that starts and dies."""
    import uvicorn

    recognizer = run if isinstance(run, Recognizer) else Recognizer.from_run(run, top_k=top_k)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    if not api_key and not is_loopback(host):
        print(
            f"warning: serving on {host} without an API key: anyone who can reach this "
            f"machine can use it (set --api-key or ${API_KEY_ENV})",
            file=sys.stderr,
        )
    app = create_app(recognizer, api_key=api_key, max_bytes=max_bytes, top_k=top_k)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {recognizer.run.title} at http://{shown}:{bound} (API docs: /docs)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
