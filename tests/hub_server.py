"""A minimal Hub stand-in on 127.0.0.1 for tests: just what huggingface_hub and transformers call to create a
repo, commit files (regular uploads only), branch, open a PR, resolve files at a revision, and list an author's
public repos by card tag.

Writes need ``Authorization: Bearer <token>``; every request's path and whether it carried the token are
logged in ``requests`` so tests can check what the client sent. State lives in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> sha
    prs: int = 0
    dates: dict[str, str] = field(default_factory=dict)  # sha -> when it was committed (ISO 8601, UTC)

    def commit(self, ref: str, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(json.dumps([ref, message, sorted((p, git_blob_oid(c)) for p, c in files.items())]).encode())
        sha = sha.hexdigest()
        if sha in self.commits:  # same content and message: make it a distinct commit anyway
            sha = hashlib.sha1((sha + str(len(self.commits))).encode()).hexdigest()
        self.commits[sha] = files
        self.refs[ref] = sha
        self.dates[sha] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return sha

    def card_tags(self) -> list[str]:
        """The ``tags`` of main's README front matter (what the Hub indexes and ``filter=`` matches)."""
        readme = self.commits[self.refs["main"]].get("README.md", b"").decode()
        if not readme.startswith("---"):
            return []
        front = readme.split("---", 2)[1]
        tags, inside = [], False
        for line in front.splitlines():
            if line.startswith("tags:"):
                inside = True
            elif inside and line.startswith("- "):
                tags.append(line[2:].strip())
            elif inside:
                inside = False
        return tags

    def resolve(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class HubState:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorised)
        self.forbidden: set[str] = set()  # repo ids whose creation is refused (to stage mid-run failures)
        self.commit_delay = 0.0  # seconds a commit request waits before it lands (a slow Hub, for interruptions)
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # --- plumbing ---------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        # Always drain the body, even for errors: keep-alive connections break otherwise.
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None) -> None:
        data = body if body is not None else json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.state.token}"

    def _error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})})

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        body = self._body()
        authorised = self._authorised()
        with self.state.lock:
            self.state.requests.append((method, path, authorised))
            try:
                self._dispatch(method, path, query, body, authorised)
            except KeyError as error:
                self._error(404, "RepoNotFound", f"not found: {error}")

    do_GET = lambda self: self._route("GET")  # noqa: E731
    do_HEAD = lambda self: self._route("HEAD")  # noqa: E731
    do_POST = lambda self: self._route("POST")  # noqa: E731

    # --- endpoints --------------------------------------------------------------------------------------
    def _dispatch(self, method: str, path: str, query: dict, body: bytes, authorised: bool) -> None:
        repos = self.state.repos
        if method == "POST" and not authorised and path != "/api/validate-yaml":
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        if method == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            url = f"http://{self.headers['Host']}/{repo_id}"
            if repo_id in self.state.forbidden:
                return self._error(403, "Forbidden", f"You don't have the rights to create a model under {repo_id}")
            if repo_id in repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            repos[repo_id] = repo = Repo(private=bool(request.get("private")))
            repo.commit("main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "initial")
            return self._send(200, {"url": url})
        if method == "POST" and path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if method == "GET" and path == "/api/models":  # list_models(author=..., filter=...): one page, public only
            return self._send(200, self._listing(query))
        if path.startswith("/api/models/"):
            return self._api(method, path[len("/api/models/") :], query, body)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        return self._error(404, "EntryNotFound", f"no route for {method} {path}")

    def _listing(self, query: dict) -> list[dict]:
        author, wanted = (query.get("author") or [None])[0], set(query.get("filter") or [])
        listed = []
        for repo_id, repo in sorted(self.state.repos.items()):
            if repo.private or (author and repo_id.split("/")[0] != author) or not wanted <= set(repo.card_tags()):
                continue
            sha = repo.refs["main"]
            listed.append({"id": repo_id, "modelId": repo_id, "sha": sha, "tags": repo.card_tags(),
                           "lastModified": repo.dates[sha], "private": False})  # fmt: skip
        return listed

    def _split(self, rest: str, marker: str) -> tuple[str, str]:
        repo_id, _, tail = rest.partition(f"/{marker}/")
        return repo_id, tail

    def _api(self, method: str, rest: str, query: dict, body: bytes) -> None:
        repos = self.state.repos
        if "/discussions" in rest:  # pull requests: upload_folder(create_pr=True) opens one, then reads it back
            repo_id, _, number = rest.partition("/discussions")
            if repo_id not in repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if method == "POST":
                return self._open_pr(repo_id, repos[repo_id], "main")
            return self._send(200, self._discussion(repo_id, int(number.strip("/"))))
        for marker in ("preupload", "commit", "branch", "tree", "revision"):
            if f"/{marker}/" in rest:
                repo_id, tail = self._split(rest, marker)
                break
        else:
            marker, repo_id, tail = "info", rest, ""
        if repo_id not in repos:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        repo = repos[repo_id]
        if marker == "branch" and method == "POST":
            if tail in repo.refs:
                return self._send(409, {"error": f"Reference {tail} already exists"})
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.refs[tail] = repo.resolve(start)
            return self._send(200, {})
        revision = tail.split("/")[0] if marker in ("tree",) else tail
        if marker == "info":
            revision = "main"
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        files = repo.commits[sha]
        if marker == "preupload":
            listed = json.loads(body)["files"]
            entries = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None,
                }
                for f in listed
            ]
            return self._send(200, {"files": entries, "commitOid": sha})
        if marker == "commit":
            return self._commit(repo_id, repo, revision, query, body)
        if marker == "tree":
            tree = [
                {"type": "file", "path": p, "size": len(c), "oid": git_blob_oid(c)} for p, c in sorted(files.items())
            ]
            return self._send(200, tree)
        siblings = [{"rfilename": p} for p in sorted(files)]
        return self._send(
            200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "siblings": siblings}
        )

    def _discussion(self, repo_id: str, number: int) -> dict:
        return {
            "num": number,
            "title": f"PR {number}",
            "createdAt": "2026-11-22T00:00:00.000Z",
            "status": "draft",
            "repo": {"name": repo_id, "type": "model"},
            "isPullRequest": True,
            "events": [],
            "changes": {"base": "refs/heads/main"},
            "filesWithConflicts": [],
        }

    def _open_pr(self, repo_id: str, repo: Repo, base: str) -> int:
        repo.prs += 1
        ref = f"refs/pr/{repo.prs}"
        repo.refs[ref] = repo.resolve(base)
        self._send(200, {"num": repo.prs, "url": f"http://{self.headers['Host']}/{repo_id}/discussions/{repo.prs}"})
        return repo.prs

    def _commit(self, repo_id: str, repo: Repo, revision: str, query: dict, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        ref, pr_url = revision, None
        if query.get("create_pr") == ["1"]:
            repo.prs += 1
            ref = f"refs/pr/{repo.prs}"
            pr_url = f"http://{self.headers['Host']}/{repo_id}/discussions/{repo.prs}"
        files = dict(repo.commits[repo.resolve(revision)])
        for line in lines:
            if line["key"] == "file":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] == "deletedFile":
                files.pop(line["value"]["path"], None)
            elif line["key"] != "header":
                return self._send(400, {"error": f"unsupported commit line {line['key']} (regular uploads only)"})
        time.sleep(self.state.commit_delay)  # the client may be gone by now; the commit lands all the same
        sha = repo.commit(ref, files, header["summary"])
        url = f"http://{self.headers['Host']}/{repo_id}/commit/{sha}"
        return self._send(200, {"commitOid": sha, "commitUrl": url, "pullRequestUrl": pr_url})

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        content = repo.commits[sha].get(filename)
        if content is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_oid(content)}"'}
        return self._send(200, headers=headers, body=content)


def client_env(server: ThreadingHTTPServer, home: Path, base: dict[str, str], **extra: str) -> dict[str, str]:
    """``base`` (a clean child environment) turned online against the stand-in, with its own Hub cache."""
    env = {k: v for k, v in base.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        **extra,
    )
    return env


def start(token: str) -> tuple[ThreadingHTTPServer, HubState]:
    """Serve on a free port of 127.0.0.1 in a daemon thread; stop with ``server.shutdown()``."""
    state = HubState(token)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state
