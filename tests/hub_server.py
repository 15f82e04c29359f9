"""A local stand-in for the Hugging Face Hub, so tests run huggingface_hub's real code paths offline.

It serves what huggingface_hub 2.4 calls for create_repo, create_branch, upload_folder,
snapshot_download and hf_hub_download, over plain HTTP on 127.0.0.1:

    POST /api/repos/create                               409 when the repo exists
    POST /api/validate-yaml                              the README front matter must parse
    POST /api/models/{repo}/branch/{branch}              409 when the branch exists
    GET  /api/models/{repo}[/revision/{rev}]             id, sha, siblings (repo_info)
    GET  /api/models/{repo}/tree/{rev}                   file list (snapshot_download)
    POST /api/models/{repo}/preupload/{rev}              every file "regular": content comes inline
    POST /api/models/{repo}/commit/{rev}                 NDJSON: header, base64 files, deletions
    HEAD/GET /{repo}/resolve/{rev}/{path}                X-Repo-Commit, ETag, Content-Length

Every commit is a real revision: a new sha over a full snapshot of the files, the branch
moved to it, older commits still resolvable. Errors carry the X-Error-Code header the client
turns into RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError. No xet
headers are sent, so downloads are plain HTTP. `requests` records "METHOD /path" lines.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    """The git blob id of `data`, which the client compares to skip unchanged files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # sha -> full file snapshot
    branches: Dict[str, str] = field(default_factory=dict)
    private: bool = False

    def commit(self, branch: str, files: Dict[str, bytes], message: str) -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{message}\n{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_oid(files[path])}\n".encode())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> Optional[str]:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubError(Exception):
    def __init__(self, status: int, code: Optional[str], message: str, commit: Optional[str] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class LocalHub(ThreadingHTTPServer):
    """The server: repos in memory, one lock around them."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: Dict[str, Repo] = {}
        self.requests: List[str] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="local-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        return self.repos[repo_id]

    def revision(self, repo_id: str, revision: str) -> Tuple[Repo, str]:
        repo = self.repo(repo_id)
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalHub

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append(f"{method} {path}")
            try:
                status, headers, payload = self._route(method, [unquote(p) for p in path.strip("/").split("/")], body)
            except HubError as err:
                status, payload = err.status, json.dumps({"error": err.message}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def _route(self, method: str, parts: List[str], body: bytes):
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body)["content"])
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, action, rest = "/".join(parts[2:4]), parts[4] if len(parts) > 4 else None, parts[5:]
            if method == "GET" and action is None:
                return self._info(repo_id, "main")
            if method == "GET" and action == "revision":
                return self._info(repo_id, "/".join(rest))
            if method == "GET" and action == "tree":
                return self._tree(repo_id, rest[0])
            if method == "POST" and action == "branch":
                return self._create_branch(repo_id, "/".join(rest), json.loads(body or b"{}"))
            if method == "POST" and action == "preupload":
                return self._preupload(repo_id, "/".join(rest), json.loads(body))
            if method == "POST" and action == "commit":
                return self._commit(repo_id, "/".join(rest), body)
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, None, f"{method} /{'/'.join(parts)} is not served by the local hub")

    def _json(self, data, status: int = 200):
        return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

    def _create_repo(self, payload):
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.server.repos:
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        repo = Repo(private=bool(payload.get("private")))
        repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.server.repos[repo_id] = repo
        return self._json({"url": url, "name": repo_id})

    def _validate_yaml(self, content: str):
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as err:
                return self._json({"errors": [{"message": str(err)}], "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})

    def _create_branch(self, repo_id: str, branch: str, payload):
        repo = self.server.repo(repo_id)
        if branch in repo.branches:
            return self._json({"error": f"Reference already exists: refs/heads/{branch}"}, 409)
        _, start = self.server.revision(repo_id, payload.get("startingPoint") or "main")
        repo.branches[branch] = start
        return self._json({})

    def _info(self, repo_id: str, revision: str):
        repo, sha = self.server.revision(repo_id, revision)
        return self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                           "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])]})

    def _tree(self, repo_id: str, revision: str):
        repo, sha = self.server.revision(repo_id, revision)
        return self._json([{"type": "file", "path": p, "size": len(data), "oid": git_oid(data)}
                           for p, data in sorted(repo.commits[sha].items())])

    def _preupload(self, repo_id: str, revision: str, payload):
        repo, sha = self.server.revision(repo_id, revision)
        current = repo.commits[sha]
        return self._json({"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_oid(current[f["path"]]) if f["path"] in current else None}
            for f in payload["files"]]})

    def _commit(self, repo_id: str, revision: str, body: bytes):
        repo, sha = self.server.revision(repo_id, revision)
        if revision not in repo.branches:
            raise HubError(400, None, f"cannot commit to {revision}: not a branch")
        files = dict(repo.commits[sha])
        message = "commit"
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, None, f"the local hub takes inline files only, not {item['key']!r}")
        new_sha = repo.commit(revision, files, message)
        return self._json({"commitUrl": f"{self.server.url}/{repo_id}/commit/{new_sha}", "commitOid": new_sha,
                           "success": True})

    def _resolve(self, repo_id: str, revision: str, path: str):
        repo, sha = self.server.revision(repo_id, revision)
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision}", commit=sha)
        data = files[path]
        return 200, {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"',
                     "Content-Type": "application/octet-stream"}, data
