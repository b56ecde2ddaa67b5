"""`fastnst web`: the browser page (web/) and the shipped models, served locally or written out as a
static site. The page runs the models with onnxruntime-web, from a pinned CDN address, or from a local
copy of its `dist/` folder (`--ort DIR`: no internet needed).
"""

from __future__ import annotations

import json
import shutil
import sys
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fastnst.errors import UserError

ORT_ENTRY = "ort.all.min.mjs"  # WebGPU and WebAssembly in one module
PAGE_FILES = ("index.html", "app.js")
MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
        ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
        ".png": "image/png", ".jpg": "image/jpeg"}


def web_dir() -> Path:
    """web/ of the checkout (an editable install), else the copy an installed fastnst carries."""
    checkout = Path(__file__).resolve().parents[1] / "web"
    installed = Path(sys.prefix) / "share" / "fastnst" / "web"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


def site(models: str | None = None, ort: str | Path | None = None) -> dict[str, Path | bytes]:
    """Every file of the site: URL path -> a file to send, or its bytes. `models`: comma-separated
    shipped names [default: all]; `ort`: a local onnxruntime-web dist/ folder."""
    from fastnst.modelfile import list_models

    page = web_dir()
    files: dict[str, Path | bytes] = {f"/{name}": page / name for name in PAGE_FILES}
    missing = [name for name in PAGE_FILES if not (page / name).is_file()]
    if missing:
        raise UserError(f"{page}: the page's {missing[0]} is missing from this install")
    shipped = {m["name"]: m for m in list_models()}
    chosen = [n.strip() for n in models.split(",") if n.strip()] if models else list(shipped)
    unknown = [n for n in chosen if n not in shipped]
    if unknown:
        raise UserError(f"--models: {unknown[0]!r} is not a shipped model ({', '.join(shipped)})")
    if not chosen:
        raise UserError("no models to serve: ship some in weights/ or check --models")
    listing = []
    for name in chosen:
        m = shipped[name]
        files[f"/models/{name}.onnx"] = m["path"]
        listing.append({"name": name, "style": m["style"], "precision": m["precision"],
                        "megabytes": round(m["megabytes"], 2), "licence": m["licence"],
                        "file": f"models/{name}.onnx"})
    files["/models.json"] = json.dumps(listing, indent=1).encode()
    if ort is not None:
        ort = Path(ort)
        if not (ort / ORT_ENTRY).is_file():
            raise UserError(f"--ort {ort}: no {ORT_ENTRY} here (give onnxruntime-web's dist/ folder)")
        for f in sorted(ort.iterdir()):
            if f.suffix in (".mjs", ".wasm") and f.is_file():
                files[f"/ort/{f.name}"] = f
        files["/config.json"] = json.dumps({"ort": f"./ort/{ORT_ENTRY}"}).encode()
    return files


def build(out: str | Path, models: str | None = None, ort: str | Path | None = None) -> int:
    """Write the site into the folder `out` (for any static host); returns the number of files."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose another folder")
    files = site(models, ort)
    for url, content in files.items():
        target = out / url.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    return len(files)


def make_server(port: int = 8000, models: str | None = None, ort: str | Path | None = None,
                host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server of the site (port 0: any free port). Cross-origin isolated, so that
    WebAssembly can use threads."""
    files = site(models, ort)

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_site_file(head_only=False)

        def do_HEAD(self):  # noqa: N802
            self.send_site_file(head_only=True)

        def send_site_file(self, head_only: bool) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0]
            content = files.get("/index.html" if path == "/" else path)
            if content is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body = content if isinstance(content, bytes) else content.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", MIME.get(Path(path).suffix, "text/html; charset=utf-8"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "credentialless")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def log_message(self, *args):  # quiet: the command prints the address
            pass

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise UserError(f"port {port}: cannot listen ({e.strerror or e})") from None


def serve(port: int = 8000, models: str | None = None, ort: str | Path | None = None, log=print) -> None:
    """Serve the site until Ctrl-C (or SIGTERM), the way a server is meant to stop."""
    server = make_server(port, models, ort)
    host, port = server.server_address[:2]
    print(f"fastnst web: http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log("fastnst web: stopped")
