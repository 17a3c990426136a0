#!/usr/bin/env python3
"""A small stand-in for the Hugging Face Hub's file endpoints, for tests/cli/hub.sh.

Serves the repositories under ROOT (ROOT/ORG/NAME/<files>) as the Hub does:
  GET  /api/models/ORG/NAME/revision/REV  -> {"id", "sha": commit, "siblings": [{"rfilename"}]}
  HEAD/GET /ORG/NAME/resolve/REV/FILE     -> the file; X-Repo-Commit and ETag (the git blob
       sha1); for LFS files (*.safetensors, *.gguf) a 302 to /cdn/<sha256> carrying
       X-Linked-Etag (the sha256) and X-Linked-Size, as the Hub answers before its CDN (named
       localhost, another host name: a request there carrying a token is logged as a leak).
The CDN answers HEAD with 403, as an address signed for GET does.
REV is "main" or the repository's commit (the sha1 of its name). Byte ranges ("Range: bytes=N-")
get a 206. Test switches:
  --gated ORG/NAME        answer 401 unless the request carries "Authorization: Bearer ..."
  --corrupt ORG/NAME/FILE serve FILE with one byte changed (its etag still the true sha256)
  --cut ORG/NAME/FILE:N   the first GET of FILE sends N bytes of it, then drops the connection
  --renamed OLD=NEW       requests naming repository OLD get a relative 307 to NEW (a rename)
Every request is logged to --log as one line: METHOD PATH RANGE BYTES_SENT.
The port it listens on (127.0.0.1) is written to --port-file."""
import argparse
import hashlib
import http.server
import json
import os
import sys
import threading
import urllib.parse

LFS = (".safetensors", ".gguf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--gated", action="append", default=[])
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--cut", action="append", default=[])
    ap.add_argument("--renamed", action="append", default=[])
    a = ap.parse_args()
    cuts = {}
    for c in a.cut:
        path, n = c.rsplit(":", 1)
        cuts[path] = int(n)
    lock = threading.Lock()

    def commit_of(repo):
        return hashlib.sha1(repo.encode()).hexdigest()

    def files_of(repo):
        base = os.path.join(a.root, repo)
        out = []
        for d, _, names in os.walk(base):
            for n in names:
                out.append(os.path.relpath(os.path.join(d, n), base))
        return sorted(out)

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def log(self, sent):
            with lock, open(a.log, "a") as f:
                f.write("%s %s %s %d\n" % (self.command, self.path, self.headers.get("Range", "-").replace(" ", ""), sent))

        def reply(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.log(len(body) if self.command != "HEAD" else 0)

        def repo_of(self, parts):
            repo = "/".join(parts[:2])
            return repo if len(parts) >= 2 and os.path.isdir(os.path.join(a.root, repo)) else None

        def token(self):
            return self.headers.get("Authorization", "").startswith("Bearer ")

        def allowed(self, repo):
            return repo not in a.gated or self.headers.get("Authorization", "").startswith("Bearer ")

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            for r in a.renamed:
                old, new = r.split("=")
                for pre in ("/api/models/", "/"):
                    if path.startswith(pre + old + "/"):
                        return self.reply(307, b"", [("Location", pre + new + path[len(pre + old):])])
            parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                repo = self.repo_of(parts[2:])
                rev = "/".join(parts[5:])
                if not repo:  # as the Hub: 401 without a token (the repository might be private)
                    return self.reply(404 if self.token() else 401, b'{"error":"Repository not found"}',
                                      [("X-Error-Code", "RepoNotFound")])
                if not self.allowed(repo):
                    return self.reply(401, b'{"error":"Access to this model is restricted"}',
                                      [("X-Error-Code", "GatedRepo")])
                if rev not in ("main", commit_of(repo)):
                    return self.reply(404, b'{"error":"Revision not found"}', [("X-Error-Code", "RevisionNotFound")])
                body = json.dumps({"id": repo, "sha": commit_of(repo),
                                   "siblings": [{"rfilename": f} for f in files_of(repo)]}).encode()
                return self.reply(200, body, [("Content-Type", "application/json")])
            if parts[0] == "cdn" and len(parts) == 4:
                if self.headers.get("Authorization"):
                    with lock, open(a.log, "a") as f:
                        f.write("TOKEN-SENT-TO-CDN %s\n" % self.path)
                if self.command == "HEAD":  # as a CDN address signed for GET only
                    return self.reply(403, b"SignatureDoesNotMatch")
                return self.send_file("/".join(parts[1:3]), parts[3], [("ETag", '"cdn-%s"' % parts[3][:8])])
            if len(parts) >= 5 and parts[2] == "resolve":
                repo = self.repo_of(parts)
                if not repo:
                    return self.reply(404, b"Repository not found")
                if not self.allowed(repo):
                    return self.reply(401, b"Access restricted")
                if parts[3] not in ("main", commit_of(repo)):
                    return self.reply(404, b"Revision not found")
                f = "/".join(parts[4:])
                full = os.path.join(a.root, repo, f)
                if not os.path.isfile(full):
                    return self.reply(404, b"Entry not found", [("X-Error-Code", "EntryNotFound")])
                data = open(full, "rb").read()
                hdr = [("X-Repo-Commit", commit_of(repo))]
                if f.endswith(LFS):
                    sha = hashlib.sha256(data).hexdigest()
                    hdr += [("ETag", '"%s"' % hashlib.sha1(b"pointer " + data).hexdigest()),
                            ("X-Linked-Etag", '"%s"' % sha), ("X-Linked-Size", str(len(data))),
                            # another host name, as the Hub's CDN is: a token must not follow
                            ("Location", "http://localhost:%d/cdn/%s/%s" % (self.server.server_address[1], repo, sha))]
                    self.cdn[(repo, sha)] = f
                    return self.reply(302, b"", hdr)
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                return self.send_file(repo, f, hdr + [("ETag", '"%s"' % blob)])
            return self.reply(404, b"not found")

        cdn = {}

        def send_file(self, repo, key, headers):
            f = self.cdn.get((repo, key))
            if f is None:  # a CDN address from before a restart: find the file by its sha256
                f = key
                for g in files_of(repo):
                    if hashlib.sha256(open(os.path.join(a.root, repo, g), "rb").read()).hexdigest() == key:
                        f = g
            full = os.path.join(a.root, repo, f)
            if not os.path.isfile(full):
                return self.reply(404, b"not found")
            data = open(full, "rb").read()
            if repo + "/" + f in a.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 1])
            start, code = 0, 200
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    return self.reply(416, b"", [("Content-Range", "bytes */%d" % len(data))])
                code = 206
                headers = headers + [("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))]
            body = data[start:]
            cut = None
            with lock:
                if self.command == "GET" and repo + "/" + f in cuts:
                    cut = cuts.pop(repo + "/" + f)
            if cut is None:
                return self.reply(code, body, headers)
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.log(cut)
            self.close_connection = True
            self.connection.shutdown(2)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(a.port_file + ".tmp", a.port_file)
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
