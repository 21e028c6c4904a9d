#!/usr/bin/env python3
"""Put GraphiQL's browser files into static-vendor/ so /graphql/ needs no CDN.

graphene-django's GraphiQL page loads React, GraphiQL, graphql-ws and the explorer plugin from a
CDN, which fails offline and on locked-down networks. This fetches the very same files from the
npm registry as pinned tarballs, checks each tarball against the registry's sha512 `integrity`
and each extracted file against the sha256 subresource-integrity value graphene-django puts in
its page, and keeps only those files. No Node is needed; nothing minified is committed.

Runs in the install step (Makefile) and in the image build (Dockerfile). Idempotent: files
already present and intact are kept. `--check` downloads nothing: it fails unless every file is
present and intact.
Usage: python scripts/fetch_static_assets.py [--dest DIR] [--check]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
DEST = Path(__file__).resolve().parent.parent / "static-vendor"


@dataclass(frozen=True)
class VendorFile:
    member: str  # path inside the tarball
    target: str  # path under DEST, what templates pass to {% static %}
    sri: str  # sha256 subresource integrity, as graphene-django's view declares it


@dataclass(frozen=True)
class Tarball:
    name: str
    version: str
    integrity: str  # the registry's dist.integrity for this exact version
    files: tuple[VendorFile, ...]

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


# The versions graphene-django 3.2.3's GraphQLView pins (graphiql_version, react_version, ...);
# the sha256 values are its *_sri attributes. tests/test_graphiql_offline.py checks they agree.
TARBALLS = (
    Tarball(
        "graphiql",
        "2.4.7",
        "sha512-Fm3fVI65EPyXy+PdbeQUyODTwl2NhpZ47msGnGwpDvdEzYdgF7pPrxL96xCfF31KIauS4+ceEJ+ZwEe5iLWiQw==",
        (
            VendorFile(
                "package/graphiql.min.js",
                "graphiql/graphiql.min.js",
                "sha256-n/LKaELupC1H/PU6joz+ybeRJHT2xCdekEt6OYMOOZU=",
            ),
            VendorFile(
                "package/graphiql.min.css",
                "graphiql/graphiql.min.css",
                "sha256-OsbM+LQHcnFHi0iH7AUKueZvDcEBoy/z4hJ7jx1cpsM=",
            ),
        ),
    ),
    Tarball(
        "react",
        "17.0.2",
        "sha512-gnhPt75i/dq/z3/6q/0asP78D0u592D5L1pd7M8P+dck6Fu/jJeL6iVVK23fptSUZj8Vjf++7wXA8UNclGQcbA==",
        (
            VendorFile(
                "package/umd/react.production.min.js",
                "graphiql/react.production.min.js",
                "sha256-Ipu/TQ50iCCVZBUsZyNJfxrDk0E2yhaEIz0vqI+kFG8=",
            ),
        ),
    ),
    Tarball(
        "react-dom",
        "17.0.2",
        "sha512-s4h96KtLDUQlsENhMn1ar8t2bEa+q/YAtj8pPPdIjPDGBDIVNsrD9aXNWqspUe6AzKCIG0C1HZZLqLV7qpOBGA==",
        (
            VendorFile(
                "package/umd/react-dom.production.min.js",
                "graphiql/react-dom.production.min.js",
                "sha256-nbMykgB6tsOFJ7OdVmPpdqMFVk4ZsqWocT6issAPUF0=",
            ),
        ),
    ),
    Tarball(
        "graphql-ws",
        "5.13.1",
        "sha512-eiX7ES/ZQr0q7hSM5UBOEIFfaAUmAY9/CSDyAnsETuybByU7l/v46drRg9DQoTvVABEHp3QnrvwgTRMhqy7zxQ==",
        (
            VendorFile(
                "package/umd/graphql-ws.min.js",
                "graphiql/graphql-ws.min.js",
                "sha256-EZhvg6ANJrBsgLvLAa0uuHNLepLJVCFYS+xlb5U/bqw=",
            ),
        ),
    ),
    Tarball(
        "@graphiql/plugin-explorer",
        "0.1.15",
        "sha512-/S82L0zahiUfOKqUtdUcHX0rWzxkr24iH7zdisAypBYK7E/oBCpbAySyQHox4+z6l/xcjhXMXdhLNuqZKUCAiw==",
        (
            VendorFile(
                "package/dist/graphiql-plugin-explorer.umd.js",
                "graphiql/graphiql-plugin-explorer.umd.js",
                "sha256-3hUuhBXdXlfCj6RTeEkJFtEh/kUG+TCDASFpFPLrzvE=",
            ),
            VendorFile(
                "package/dist/style.css",
                "graphiql/plugin-explorer.css",
                "sha256-fA0LPUlukMNR6L4SPSeFqDTYav8QdWjQ2nr559Zln1U=",
            ),
        ),
    ),
    Tarball(
        "whatwg-fetch",
        "3.6.2",
        "sha512-bJlen0FcuU/0EMLrdbJ7zOnW6ITZLrZMIarMUVmdKtsGvZna8vxKYaexICWPfZ8qwf9fzNq+UEIZrnSaApt6RA==",
        (
            VendorFile(
                "package/dist/fetch.umd.js",
                "graphiql/fetch.umd.js",
                "sha256-+pQdxwAcHJdQ3e/9S4RK6g8ZkwdMgFQuHvLuN5uyk5c=",
            ),
        ),
    ),
)


class IntegrityError(RuntimeError):
    """A download or an extracted file is not what was pinned."""


def integrity_of(data: bytes, algorithm: str) -> str:
    """A subresource-integrity string (`sha512-<base64>`) of `data`."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def is_intact(path: Path, sri: str) -> bool:
    return path.is_file() and integrity_of(path.read_bytes(), sri.split("-", 1)[0]) == sri


def download(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def install_tarball(tarball: Tarball, dest: Path) -> list[str]:
    """Fetch, verify and extract one tarball's files; the targets written."""
    data = download(tarball.url)
    got = integrity_of(data, tarball.integrity.split("-", 1)[0])
    if got != tarball.integrity:
        raise IntegrityError(f"{tarball.url}: integrity {got} is not the pinned {tarball.integrity}")
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for file in tarball.files:
            member = archive.extractfile(file.member)
            if member is None:
                raise IntegrityError(f"{tarball.url} has no file {file.member}")
            content = member.read()
            if integrity_of(content, "sha256") != file.sri:
                raise IntegrityError(f"{tarball.url}: {file.member} does not match {file.sri}")
            target = dest / file.target
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            written.append(file.target)
    return written


def damaged(dest: Path = DEST) -> list[str]:
    """The pinned files missing from `dest` or different from what was pinned."""
    return [
        file.target for tarball in TARBALLS for file in tarball.files if not is_intact(dest / file.target, file.sri)
    ]


def ensure_assets(dest: Path = DEST) -> list[str]:
    """Make every pinned file present and intact under `dest`; the targets (re)written."""
    written: list[str] = []
    for tarball in TARBALLS:
        if all(is_intact(dest / file.target, file.sri) for file in tarball.files):
            continue
        written += install_tarball(tarball, dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEST, help=f"target folder (default {DEST})")
    parser.add_argument("--check", action="store_true", help="download nothing; fail unless every file is intact")
    args = parser.parse_args(argv)
    if args.check:
        bad = damaged(args.dest)
        if bad:
            print(f"fetch_static_assets: missing or altered in {args.dest}: {', '.join(bad)}", file=sys.stderr)
            return 1
        return 0
    try:
        written = ensure_assets(args.dest)
    except (OSError, IntegrityError) as error:
        print(f"fetch_static_assets: {error}", file=sys.stderr)
        return 1
    if written:
        print(f"fetch_static_assets: wrote {len(written)} files to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
