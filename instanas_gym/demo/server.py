"""The demo's web app (Flask) and its server (waitress).

Flask keeps the app to a few small views, and waitress is a pure-Python production WSGI server that
serves several requests at once from a pool of threads, on every OS, with nothing to compile. The
model runs on the server, in ONNX Runtime, the deployment runtime whose latency the page reports;
a browser runtime (onnxruntime-web) would time the browser's WebAssembly instead. The page itself
(``static/``) is plain HTML, CSS and JavaScript with no external files, so it works offline.

Routes (JSON unless said otherwise; every error is ``{"error": message}`` with a 4xx status):

* ``GET /``: the page.
* ``GET /api/summary``: what the page draws at load (:meth:`.state.DemoState.summary`).
* ``GET /api/images/<index>.png``: a test image (400 for an index that is not a plain decimal
  number, 404 outside the test split).
* ``POST /api/predict``: multipart form with a file ``image`` (and optionally ``invert``: auto, yes,
  no) or a form field ``index`` (a test image); answers :meth:`.state.DemoState.classify`, plus the
  image classified (``image_png``, base64) and, for a test image, its label.

The server keeps no state per user: the page remembers the previous architecture itself, so several
users never see each other's.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from instanas_gym.demo.upload import UploadError, decode_upload, png_bytes

if TYPE_CHECKING:  # the state loads ONNX Runtime and the data: ``instanas-gym demo`` checks its port first
    import numpy as np

    from instanas_gym.demo.state import DemoState

#: Largest request accepted (bytes); a larger upload gets 413.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: Requests waitress serves at once.
SERVER_THREADS = 4
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
#: A test image's index as a request gives it: ASCII digits only, no sign, at most 9 of them.
_INDEX = re.compile(r"[0-9]{1,9}")


def parse_index(text: str, count: int) -> int:
    """``text`` as the index of one of ``count`` test images; an UploadError (400, or 404 out of range)
    otherwise. Only ASCII digits: ``int`` would also take "²"'s relatives and thousands of digits."""
    text = text.strip()
    if not _INDEX.fullmatch(text):
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise UploadError(f"index must be an integer from 0 to {count - 1}, got {shown!r}", 400)
    index = int(text)
    if index >= count:
        raise UploadError(f"index {index} is not a test image (0 to {count - 1})", 404)
    return index


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _requested_image(state: DemoState) -> tuple[np.ndarray, dict[str, Any]]:
    """The image a predict request sends (an upload or a test image's index) and what to say of it;
    an :class:`UploadError` (415 or 400) for a request that sends neither."""
    if request.mimetype not in FORMS:
        raise UploadError(f"send a form (multipart/form-data with a file 'image', or a field 'index'), "
                          f"not {request.mimetype or 'no content type'}", 415)
    if "image" in request.files:
        upload = request.files["image"]
        image, inverted = decode_upload(upload.read(), state.spec.image_shape,
                                        request.form.get("invert", "auto"))  # type: ignore[arg-type]
        return image, {"source": upload.filename or "upload", "inverted": inverted}
    if "index" in request.form:
        index = parse_index(request.form["index"], len(state.test))
        label = state.spec.class_names[int(state.test.labels[index])]
        return state.test_image(index), {"source": f"test image {index}", "index": index, "label": label}
    raise UploadError("no image: send a file field 'image' or a form field 'index'", 400)


def create_app(state: DemoState, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Flask:
    """The Flask app serving ``state``'s page and API."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    summary = state.summary()

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        if err.code == 413:
            return _error(f"the upload is larger than {max_upload_bytes // (1024 * 1024)} MiB", 413)
        return _error(err.description or err.name, err.code or 500)

    @app.errorhandler(UploadError)
    def upload_error(err: UploadError) -> tuple[Response, int]:
        return _error(str(err), err.status)

    @app.get("/")
    def page() -> Response:
        return send_from_directory(app.static_folder, "index.html")

    @app.get("/api/summary")
    def get_summary() -> Response:
        return jsonify(summary)

    @app.get("/api/images/<index>.png")
    def test_image(index: str) -> Response:
        image = state.test_image(parse_index(index, len(state.test)))
        return Response(png_bytes(image), mimetype="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/predict")
    def predict() -> Response | tuple[Response, int]:
        image, extra = _requested_image(state)
        result = state.classify(image)
        result["image_png"] = base64.b64encode(png_bytes(image)).decode("ascii")
        return jsonify(result | extra)

    return app


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be listened on now (checked before the slow start-up)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def serve(state: DemoState, host: str = "127.0.0.1", port: int = 8000, threads: int = SERVER_THREADS) -> None:
    """Serve the demo until interrupted (waitress, ``threads`` requests at once). Requests beyond
    ``threads`` wait in waitress's queue, as they should: its warning about the queue's depth is
    not shown."""
    from waitress import serve as waitress_serve

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress_serve(create_app(state), host=host, port=port, threads=threads)
