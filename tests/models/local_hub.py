"""A local Hugging Face Hub: the endpoints huggingface_hub 0.27.1 uses for hf_hub_download and model_info.

`HEAD /{repo}/resolve/{revision}/{filename}` answers like the hub does for an LFS file: a 302 to a
"CDN" URL with X-Repo-Commit, X-Linked-Etag (the file's SHA-256) and X-Linked-Size;
`GET /cdn/{sha256}` serves the bytes with Content-Length and honours `Range: bytes=N-` (resume);
`GET /api/models/{repo}/revision/{revision}?blobs=true` returns the JSON model_info parses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from moebench import config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hub" / "micro-llama.F16.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "example-org/Micro-Llama-GGUF"
FILENAME = "micro-llama.F16.gguf"


@dataclass
class HubState:
    files: dict[str, bytes]
    commit: str = COMMIT
    corrupt: bool = False                         # serve different bytes under the right headers
    requests: list[dict] = field(default_factory=list)

    def served_bytes(self, name: str) -> bytes:
        data = self.files[name]
        if self.corrupt:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


class HubHandler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _record(self) -> None:
        self.state.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, code: str) -> None:
        self._send(404, {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"},
                   json.dumps({"error": code}).encode())

    def _revision_ok(self, revision: str) -> bool:
        return revision in ("main", self.state.commit)

    def do_HEAD(self) -> None:  # noqa: N802
        self._record()
        match = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<name>.+)", self.path)
        if not match or match["repo"] != REPO:
            return self._not_found("RepoNotFound")
        if not self._revision_ok(match["rev"]):
            return self._not_found("RevisionNotFound")
        if match["name"] not in self.state.files:
            return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": self.state.commit})
        data = self.state.files[match["name"]]
        sha = hashlib.sha256(data).hexdigest()
        host = self.headers["Host"]
        self._send(302, {"X-Repo-Commit": self.state.commit, "X-Linked-Etag": f'"{sha}"', "ETag": '"0a1b2c"',
                         "X-Linked-Size": str(len(data)), "Location": f"http://{host}/cdn/{sha}",
                         "Content-Length": "0"})

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        path = self.path.split("?", 1)[0]
        if match := re.fullmatch(r"/cdn/(?P<sha>[0-9a-f]{64})", path):
            return self._serve_blob(match["sha"])
        if match := re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", path):
            if match["repo"] != REPO:
                return self._not_found("RepoNotFound")
            if not self._revision_ok(match["rev"]):
                return self._not_found("RevisionNotFound")
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(self._model_info()).encode())
        return self._not_found("EntryNotFound")

    def _model_info(self) -> dict:
        siblings = [{"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest(),
                     "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
                    for name, data in self.state.files.items()]
        siblings.append({"rfilename": "README.md", "size": 12, "blobId": "f" * 40})
        return {"_id": "x", "id": REPO, "sha": self.state.commit, "private": False, "siblings": siblings}

    def _serve_blob(self, sha: str) -> None:
        name = next((n for n, d in self.state.files.items() if hashlib.sha256(d).hexdigest() == sha), None)
        if name is None:
            return self._not_found("EntryNotFound")
        data = self.state.served_bytes(name)
        start = 0
        if rng := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(rng.group(1))
            return self._send(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                    "Content-Type": "application/octet-stream"}, data[start:])
        self._send(200, {"Content-Type": "application/octet-stream"}, data)


def with_hub(cfg: config.Config, model_id: str, **hub_fields) -> config.Config:
    """`cfg` with one model's `hub` section replaced (the served repo, pins as given)."""
    spec = cfg.models.models[model_id]
    hub = spec.hub.model_copy(update={"repo": REPO, "filename": FILENAME, **hub_fields})
    models = cfg.models.model_copy(update={"models": {**cfg.models.models,
                                                      model_id: spec.model_copy(update={"hub": hub})}})
    return dataclasses.replace(cfg, models=models)
