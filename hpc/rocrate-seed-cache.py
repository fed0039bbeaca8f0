#!/usr/bin/env python3
"""Seeds rocrate-validator's HTTP cache with the RO-Crate JSON-LD context, for machines
without access to w3id.org (HPC login nodes, this project's CI).

The validator expands a crate's JSON-LD with the context its `@context` names
(https://w3id.org/ro/crate/1.1/context). Offline it can only read it from its HTTP cache
(requests-cache, SQLite). This stores, under that URL, the RO-Crate 1.1 context
as the independent `rocrate` package (ResearchObject/ro-crate-py) published it in its
release 0.9.0 (`rocrate/data/ro-crate.jsonld` of the wheel from PyPI; later releases bundle
the 1.3 context, whose IRIs for some terms differ).

Usage: rocrate-seed-cache.py CACHE_PATH ROCRATE_0_9_0_WHEEL   (then: rocrate-validator
validate --offline --cache-path CACHE_PATH ...)
"""

import io
import json
import sys
import zipfile
from pathlib import Path

import requests
import urllib3
from requests_cache import CachedSession

URL = "https://w3id.org/ro/crate/1.1/context"


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    wheel = Path(sys.argv[2])
    with zipfile.ZipFile(wheel) as z:
        doc = json.loads(z.read("rocrate/data/ro-crate.jsonld"))
    if doc.get("@id") != URL:
        print(f"{wheel}: its context is {doc.get('@id')}, not {URL}", file=sys.stderr)
        return 1
    body = json.dumps({"@context": doc["@context"]}).encode()
    session = CachedSession(cache_name=sys.argv[1], backend="sqlite", expire_after=-1,
                            allowable_methods=("GET",), allowable_codes=(200, 302, 404))
    for url in [URL]:
        prepared = requests.Request("GET", url).prepare()
        response = requests.Response()
        response.status_code = 200
        response.url = url
        response._content = body
        response.headers["Content-Type"] = "application/ld+json"
        response.request = prepared
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=dict(response.headers), status=200,
                                            preload_content=False, request_url=url)
        response.encoding = "utf-8"
        session.cache.save_response(response)
        print(f"cached {url} ({len(body)} bytes, from {wheel})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
