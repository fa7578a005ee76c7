"""``celebmodel serve``: every endpoint through FastAPI's test client, hostile uploads, the API
key, and a real server process under eight concurrent clients.

Status codes under test: 400 an unusable photo (the CLI's "file: problem" message), 401 no or
a wrong key, 413 a body over the limit (declared or streamed), 422 a malformed request.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import add_run, astronauts, broken_photos, cameramen, jpeg
from fastapi.testclient import TestClient
from PIL import Image

from celebmodel.errors import FaceError
from celebmodel.interfaces.cli import main
from celebmodel.interfaces.serve import MB, create_app
from celebmodel.recognition.recognize import Recognizer

KEY = "s3cret-key"
ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def recognizer(astro) -> Recognizer:
    return Recognizer.from_run(astro)


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return jpeg(astronauts(1, seed=42)[0])


@pytest.fixture(scope="module")
def client(recognizer):
    """The open API (no key), with a 1 MB limit so over-limit bodies stay cheap."""
    with TestClient(create_app(recognizer, max_bytes=1 * MB)) as client:
        yield client


@pytest.fixture(scope="module")
def locked(recognizer):
    with TestClient(create_app(recognizer, api_key=KEY)) as client:
        yield client


def identify(client: TestClient, data: bytes, name: str = "photo.jpg", **fields):
    return client.post("/identify", files={"file": (name, data, "image/jpeg")}, data=fields)


def close(a, b, path: str = "") -> None:
    """Equal JSON, floats to 1e-6 (two model instances may round the last bit apart)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def astronaut_face(answer: dict) -> dict:
    """The astronaut's face among those found (the photo may show a patch as a face too)."""
    (face,) = [face for face in answer["faces"] if face["label"] == "Astronaut"]
    return face


def still_serving(client: TestClient, astronaut: bytes) -> None:
    answer = identify(client, astronaut)
    assert answer.status_code == 200, answer.text
    astronaut_face(answer.json())


# Every endpoint ------------------------------------------------------------------------------


def test_identify_answers_what_predict_json_prints(client, astro, astronaut, tmp_path, capsys):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut)
    assert main(["predict", str(astro.path), str(photo), "--json"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    answer = identify(client, astronaut, "astronaut.jpg")
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["image"] == "astronaut.jpg" and printed["image"] == str(photo)
    close(got["faces"], printed["faces"])
    face = astronaut_face(got)
    assert face["known"] and len(face["top_k"]) == 2 and got["error"] is None
    assert {"box", "confidence", "similarity", "top_k", "evidence"} <= set(face)


def test_identify_takes_threshold_min_similarity_and_top_k(client, astronaut):
    strict = identify(client, astronaut, threshold="0").json()
    assert {f["label"] for f in strict["faces"]} == {"unknown"}
    assert "Astronaut" in {f["nearest"] for f in strict["faces"]}
    picky = identify(client, astronaut, min_similarity="1").json()
    assert {f["label"] for f in picky["faces"]} == {"unknown"}
    faces = identify(client, astronaut, top_k="1").json()["faces"]
    assert all(len(f["top_k"]) == (1 if f["known"] else 0) for f in faces)
    assert any(f["known"] for f in faces)
    stranger = identify(client, jpeg(cameramen(1, seed=3)[0]), "cameraman.jpg").json()
    assert stranger["faces"] and {f["label"] for f in stranger["faces"]} == {"unknown"}
    blank = identify(client, jpeg(Image.new("RGB", (300, 200), (128, 128, 128))), "grey.jpg")
    assert blank.status_code == 200
    assert blank.json() == {"image": "grey.jpg", "faces": [], "error": "no face found"}
    malformed = (
        {"top_k": "0"},
        {"threshold": "abc"},
        {"threshold": "nan"},
        {"min_similarity": "2"},
        {"threshold": "1", "min_similarity": "1"},
    )
    for fields in malformed:
        assert identify(client, astronaut, **fields).status_code == 422, fields


def test_the_api_answers_for_the_run_as_it_is_now(astro, folders, astronaut):
    """A person renamed or a threshold set while the server runs show in its next answers."""
    from celebmodel.recognition import people

    runs, _ = folders
    run = add_run(runs, astro, "20250101-000000-dlib128")
    with TestClient(create_app(run.path)) as client:

        def names() -> set[str]:
            return {p["name"] for p in client.get("/people").json()["people"]}

        assert names() == {"Astronaut", "Cat"}
        people.rename(run, "Astronaut", "Buzz Aldrin")
        assert names() == {"Buzz Aldrin", "Cat"}
        assert astronaut_face(identify(client, astronaut).json())["name"] == "Buzz Aldrin"
        run.set_threshold(0.0, "a test")  # nobody is that close: every face unknown
        assert {f["label"] for f in identify(client, astronaut).json()["faces"]} == {"unknown"}


def test_people_health_version_and_the_openapi_page(client, astro):
    people = client.get("/people").json()
    assert people["run"] == astro.name
    assert [(p["label"], p["name"], p["kind"]) for p in people["people"]] == [
        ("Astronaut", "Astronaut", "trained"),
        ("Cat", "Cat", "trained"),
    ]
    assert all(p["photos"] > 0 for p in people["people"])
    found = client.get("/people", params={"q": "CAT  "}).json()  # the one name search
    assert found["total"] == 1 and found["people"][0]["label"] == "Cat"
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True, "run": astro.name}
    version = client.get("/version").json()
    import keras
    import tensorflow as tf

    import celebmodel

    assert version["celebmodel"] == celebmodel.__version__ and version["run"] == astro.name
    assert version["backbone"] == "dlib128" and version["tensorflow"] == tf.__version__
    assert version["keras"] == keras.__version__
    spec = client.get("/openapi.json").json()
    assert {"/identify", "/people", "/health", "/version"} <= set(spec["paths"])
    codes = spec["paths"]["/identify"]["post"]["responses"]
    assert {"200", "400", "413", "422"} <= set(codes)
    assert "decompression bomb" in codes["400"]["description"]
    assert client.get("/docs").status_code == 200


# Hostile uploads -----------------------------------------------------------------------------


def test_broken_photos_get_400_with_the_clis_message_and_the_server_goes_on(
    client, astronaut, tmp_path
):
    for name, (content, problem) in broken_photos(tmp_path).items():
        answer = identify(client, content, name)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["detail"].startswith(f"{name}: "), answer.text
        assert problem in answer.json()["detail"], (name, answer.text)
        still_serving(client, astronaut)


def test_bodies_over_the_limit_get_413_declared_or_streamed(client, recognizer, astronaut):
    big = os.urandom(2 * MB)
    answer = identify(client, big, "big.jpg")  # Content-Length says 2 MB: refused unread
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"].startswith("request body: too large (2,097,")
    still_serving(client, astronaut)

    boundary = "x" * 16
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode() + big

    def chunks():  # no Content-Length: the limit applies to the bytes as they arrive
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    answer = client.post("/identify", content=chunks(), headers=headers)
    assert answer.status_code == 413, answer.text
    assert "too large (over 1,048,576 bytes" in answer.json()["detail"]  # counted, not told
    still_serving(client, astronaut)

    with TestClient(create_app(recognizer)) as default:  # the default 20 MB limit
        answer = identify(default, bytes(100 * MB), "huge.jpg")
        assert answer.status_code == 413 and "20,971,520" in answer.json()["detail"]
        still_serving(default, astronaut)


def test_malformed_requests_get_422(client, astronaut):
    assert client.post("/identify", data={"threshold": "1"}).status_code == 422  # no file
    assert client.post("/identify", content=b"not multipart").status_code == 422
    still_serving(client, astronaut)


def test_a_problem_of_the_server_is_a_500_with_its_message(client, recognizer, monkeypatch):
    def broken(*args, **kwargs):
        raise FaceError("the face models are not installed: pip install face-recognition-models")

    monkeypatch.setattr(recognizer, "analyse_for_groups", broken)
    answer = identify(client, jpeg(astronauts(1, seed=2)[0]))
    assert answer.status_code == 500
    assert answer.json() == {
        "detail": "the face models are not installed: pip install face-recognition-models"
    }


# The API key ---------------------------------------------------------------------------------


def test_the_api_key_is_enforced(locked, astronaut):
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        for method, path in (("post", "/identify"), ("get", "/people"), ("get", "/version")):
            files = {"file": ("a.jpg", astronaut, "image/jpeg")} if method == "post" else None
            answer = locked.request(method.upper(), path, files=files, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.json() == {"detail": "X-API-Key: missing or wrong API key"}
    good = {"X-API-Key": KEY}
    assert locked.get("/people", headers=good).status_code == 200
    answer = locked.post("/identify", files={"file": ("a.jpg", astronaut)}, headers=good)
    assert answer.status_code == 200
    astronaut_face(answer.json())
    assert locked.get("/health").status_code == 200  # open, for load balancers
    schemes = locked.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes == {
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The server's API key (--api-key or $CELEBMODEL_API_KEY).",
        }
    }


def test_serve_errors_are_one_line(capsys, tmp_path, astro):
    assert main(["serve", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such run directory\n"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(astro.path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: 127.0.0.1:{port}: cannot listen (") and "Traceback" not in err


# A real server ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_server_serves_eight_concurrent_clients(astro, astronaut, tmp_path):
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "CELEBMODEL_API_KEY": KEY,  # the key from the environment, not the command line
        "CELEBMODEL_DATA": str(tmp_path / "data"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "celebmodel", "serve", str(astro.path), "--port", "0"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = wait_until_serving(server, log)
        headers = {"X-API-Key": KEY}
        photos = [jpeg(photo) for photo in astronauts(4, seed=7)]

        def client(number: int) -> list[int]:
            codes = []
            with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                for i in range(3):
                    files = {"file": (f"c{number}-{i}.jpg", photos[(number + i) % 4])}
                    answer = http.post("/identify", files=files)
                    codes.append(answer.status_code)
                    assert answer.status_code == 200, answer.text
                    astronaut_face(answer.json())
            return codes

        with ThreadPoolExecutor(8) as pool:
            codes = [code for codes in pool.map(client, range(8)) for code in codes]
        assert codes == [200] * 24

        with httpx.Client(base_url=url, timeout=120) as http:
            assert http.get("/people").status_code == 401
            huge = http.post(
                "/identify", files={"file": ("huge.jpg", bytes(100 * MB))}, headers=headers
            )
            assert huge.status_code == 413
            assert http.get("/health").json()["model_loaded"] is True
            again = http.post("/identify", files={"file": ("a.jpg", astronaut)}, headers=headers)
            assert again.status_code == 200
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def wait_until_serving(server: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    """The URL the server printed, once ``/health`` answers."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        if url is None:
            found = re.search(r"at (http://\S+) \(API docs", log.read_text())
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"the server did not start: {log.read_text()[-3000:]}")
