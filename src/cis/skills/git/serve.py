"""git's pack protocol (v0) over a ``DuplexStream``, served by dulwich's handlers.

dulwich speaks the protocol: the ref advertisement (``HEAD`` as a symref, from a snapshot of the
skill's database), capabilities, want/have negotiation with its ACKs, shallow requests, the push
commands and the status report. Two parts are replaced, each for a stated reason:

- **Ref updates.** dulwich's receive-pack calls ``refs.set_if_equals`` and reports ``ok``
  whatever it returns, so a push that lost a race would be told it succeeded. ``_apply_pack``
  sends every update through ``Repositories.update_refs`` (compare-and-swap, fast-forward
  check) and reports its refusal in git's own words. ``atomic`` is not advertised; object
  formats other than SHA-1 are refused.
- **Pack bytes, when the ``git`` binary is installed** (it is wherever someone pushes to a
  node). The received pack is indexed by ``git index-pack --stdin --fix-thin --strict``, which
  computes every object id from its content, fsck-checks every object and honours
  ``--max-input-size`` (``receive.maxInputSize``); the pack sent to a fetch is made by
  ``git pack-objects --revs`` from the negotiated wants and haves, streaming. dulwich's own
  pure-Python indexer and pack writer do the same work 5 to 70 times slower on a 5,000-commit
  repository (bench/git_push_clone.py); they remain the path without ``git``, and for shallow
  or filtered fetches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from dulwich.errors import (
    ApplyDeltaError,
    ChecksumMismatch,
    GitProtocolError,
    ObjectFormatException,
)
from dulwich.object_store import DiskObjectStore, MissingObjectFinder, PackInputTooLarge
from dulwich.objects import ObjectID, sha_to_hex
from dulwich.pack import load_pack_index, write_pack_from_container
from dulwich.protocol import (
    CAPABILITY_ATOMIC,
    CAPABILITY_NO_DONE,
    CAPABILITY_NO_PROGRESS,
    CAPABILITY_OFS_DELTA,
    CAPABILITY_SIDE_BAND_64K,
    CAPABILITY_THIN_PACK,
    SIDE_BAND_CHANNEL_PROGRESS,
    ReceivableProtocol,
)
from dulwich.refs import DictRefsContainer, Ref
from dulwich.repo import BaseRepo
from dulwich.server import (
    Backend,
    BackendRepo,
    ReceivePackHandler,
    UploadPackHandler,
    _ProtocolGraphWalker,
)

from cis.skills.contract import DuplexStream
from cis.skills.git.names import InvalidName, validate_ref
from cis.skills.git.repos import UpdateRequest
from cis.skills.git.schema import MAX_LISTED_OBJECTS, ZERO

__all__ = ["GIT", "PushResult", "serve_receive_pack", "serve_upload_pack"]

GIT: Final = shutil.which("git")
SHA1_FORMAT: Final = b"object-format=sha1"
PIPE_CHUNK: Final = 65_515  # one side-band-64k packet
ApplyUpdates = Callable[[DiskObjectStore, list[UpdateRequest], list[str], int], list[str | None]]
"""``(store, requests, object ids listed, object count) -> per request None or a reason``."""


def git_env(repo_dir: Path) -> dict[str, str]:
    """The environment of the ``git`` processes the node runs: the repository, no user or
    system configuration, stable messages."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_DIR": str(repo_dir),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(repo_dir),
        "LC_ALL": "C",
    }


class _ServedRepo(BaseRepo):
    """What dulwich's handlers serve: an object store and a snapshot of the refs."""

    def __init__(self, store: DiskObjectStore, refs: dict[str, str], head: str | None) -> None:
        raw: dict[Ref, bytes] = {Ref(k.encode()): v.encode() for k, v in refs.items()}
        if head is not None and head in refs:
            raw[Ref(b"HEAD")] = b"ref: " + head.encode()
        super().__init__(store, DictRefsContainer(raw))
        self.disk_store = store

    def get_shallow(self) -> set[ObjectID]:
        return set()


class _Backend(Backend):
    def __init__(self, repo: _ServedRepo) -> None:
        self._repo = repo

    def open_repository(self, path: str) -> BackendRepo:
        return self._repo  # type: ignore[return-value]  # a DiskObjectStore is pack-based


def _protocol(stream: DuplexStream) -> ReceivableProtocol:
    return ReceivableProtocol(stream.recv, stream.write)


def _pipes(process: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes], IO[bytes]]:
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    if stdin is None or stdout is None or stderr is None:
        raise RuntimeError("a git process without its pipes")
    return stdin, stdout, stderr


def _drain(pipe: IO[bytes], into: list[bytes]) -> threading.Thread:
    def read() -> None:
        into.append(pipe.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- upload-pack


class _UploadPack(UploadPackHandler):
    """dulwich's upload-pack, with the pack made by ``git pack-objects`` when possible."""

    def __init__(
        self, repo: _ServedRepo, repo_dir: Path, proto: ReceivableProtocol, use_git: bool
    ) -> None:
        super().__init__(_Backend(repo), ["/"], proto)
        self._served = repo
        self._repo_dir = repo_dir
        self._use_git = use_git

    def handle(self) -> None:
        # The same steps as UploadPackHandler.handle, with the pack generation chosen below.
        self._processing_have_lines = True
        store = self._served.disk_store
        walker = _ProtocolGraphWalker(
            self, store, self._served.get_peeled, self._served.refs.get_symrefs
        )
        refs = {ref: sha for ref, sha in self._served.get_refs().items() if sha in store}
        wants = walker.determine_wants(refs, None)
        if not wants:
            return
        haves = store.find_common_revisions(walker)
        shallow = bool(walker.shallow or walker.unshallow)
        if not walker.handle_done(not self.has_capability(CAPABILITY_NO_DONE), self._done_received):
            return
        self._start_pack_send_phase()
        if self._use_git and not shallow and self.filter_spec is None:
            self._send_with_git(wants, haves)
        else:
            self._send_with_dulwich(store, wants, haves, walker)
        self.proto.write_pkt_line(None)

    def _send_with_git(self, wants: list[ObjectID], haves: list[ObjectID]) -> None:
        args = [GIT or "git", "pack-objects", "--revs", "--stdout"]
        if haves and self.has_capability(CAPABILITY_THIN_PACK):
            args.append("--thin")
        if self.has_capability(CAPABILITY_OFS_DELTA):
            args.append("--delta-base-offset")
        progress = not self.has_capability(CAPABILITY_NO_PROGRESS)
        args.append("--progress" if progress else "-q")
        revs = b"".join(w + b"\n" for w in wants) + b"--not\n" + b"".join(h + b"\n" for h in haves)
        process = subprocess.Popen(
            args, cwd=self._repo_dir, env=git_env(self._repo_dir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdin, stdout, stderr = _pipes(process)
        errors: list[bytes] = []
        relay = threading.Thread(
            target=self._relay_progress, args=(stderr, errors, progress), daemon=True
        )
        relay.start()
        try:
            stdin.write(revs)
            stdin.close()
            while chunk := os.read(stdout.fileno(), PIPE_CHUNK):
                self.write_pack_data(chunk)
        except BaseException:
            process.kill()  # the client went away: stop making the pack
            raise
        finally:
            process.wait()
            relay.join(5)
            stdout.close()
        if process.returncode != 0:
            raise GitProtocolError(f"pack-objects failed: {b''.join(errors)[-300:].decode()}")

    def _relay_progress(self, pipe: IO[bytes], errors: list[bytes], relay: bool) -> None:
        with contextlib.suppress(Exception):
            while chunk := os.read(pipe.fileno(), 4096):
                errors.append(chunk)
                if relay:
                    self.progress(chunk)
        pipe.close()

    def _send_with_dulwich(
        self,
        store: DiskObjectStore,
        wants: list[ObjectID],
        haves: list[ObjectID],
        walker: _ProtocolGraphWalker,
    ) -> None:
        finder = MissingObjectFinder(
            store,
            haves=[] if walker.shallow or walker.unshallow else haves,
            wants=wants,
            shallow=walker.shallow,
            progress=self.progress,
            get_tagged=self.get_tagged,
        )
        object_ids = list(finder)
        self.progress(f"counting objects: {len(object_ids)}, done.\n".encode("ascii"))
        write_pack_from_container(
            self.write_pack_data, store, object_ids, object_format=self._served.object_format
        )


def serve_upload_pack(
    store: DiskObjectStore,
    repo_dir: Path,
    refs: dict[str, str],
    head: str | None,
    stream: DuplexStream,
    *,
    use_git: bool = GIT is not None,
) -> None:
    """Serve one fetch or clone. Blocking."""
    repo = _ServedRepo(store, refs, head)
    _UploadPack(repo, repo_dir, _protocol(stream), use_git).handle()


# ---------------------------------------------------------------------- receive-pack


@dataclass(slots=True)
class PushResult:
    updates: int = 0
    accepted: int = 0
    objects: int = 0
    unpack_error: str | None = None


class PackRefused(Exception):
    """The pushed pack cannot be stored (the message is git's status for it)."""


class _ReceivePack(ReceivePackHandler):
    def __init__(
        self,
        repo: _ServedRepo,
        proto: ReceivableProtocol,
        *,
        repo_dir: Path,
        apply_updates: ApplyUpdates,
        max_input_size: int | None,
        result: PushResult,
        use_git: bool,
    ) -> None:
        super().__init__(_Backend(repo), ["/"], proto)
        self._store = repo.disk_store
        self._repo_dir = repo_dir
        self._proto = proto
        self._apply_updates = apply_updates
        self._max_input_size = max_input_size
        self._result = result
        self._use_git = use_git

    def capabilities(self) -> Iterable[bytes]:
        return [c for c in super().capabilities() if c != CAPABILITY_ATOMIC]

    def set_client_capabilities(self, caps: Iterable[bytes]) -> None:
        caps = list(caps)
        for cap in caps:
            if cap.startswith(b"object-format=") and cap != SHA1_FORMAT:
                raise GitProtocolError("cis: only SHA-1 repositories are supported")
        super().set_client_capabilities(caps)

    def _receive_max_input_size(self) -> int | None:
        return self._max_input_size

    def _progress(self, text: str) -> None:
        if self.has_capability(CAPABILITY_SIDE_BAND_64K):
            self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, text.encode() + b"\n")

    def _ingest_with_git(self) -> list[ObjectID]:
        """Pipe the pack into ``git index-pack``; return the ids of the objects it stored."""
        args = [GIT or "git", "index-pack", "--stdin", "--fix-thin", "--strict"]
        if self._max_input_size:
            args.append(f"--max-input-size={self._max_input_size}")
        process = subprocess.Popen(
            args, cwd=self._repo_dir, env=git_env(self._repo_dir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdin, stdout, stderr = _pipes(process)
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [_drain(stdout, out), _drain(stderr, err)]

        def feed() -> None:
            # index-pack stops reading at the end of the pack, which is also where the
            # client stops sending (it then waits for the report): stop with it.
            with contextlib.suppress(Exception):
                while process.poll() is None and (data := self._proto.recv(PIPE_CHUNK)):
                    stdin.write(data)
                    stdin.flush()
            with contextlib.suppress(OSError):
                stdin.close()

        threading.Thread(target=feed, daemon=True).start()
        process.wait()
        for reader in readers:
            reader.join(10)
        if process.returncode != 0:
            message = b"".join(err).decode("utf-8", "replace")
            if "maximum allowed size" in message:
                raise PackRefused("pack exceeds maximum allowed size (receive.maxInputSize)")
            last = message.strip().splitlines()[-1] if message.strip() else "index-pack failed"
            raise PackRefused(last.removeprefix("fatal: ")[:200])
        _kind, _, name = b"".join(out).decode().strip().partition("\t")
        index = load_pack_index(
            str(self._repo_dir / "objects" / "pack" / f"pack-{name}.idx"),
            self._store.object_format,
        )
        try:
            return [sha_to_hex(entry[0]) for entry in index.iterentries()]
        finally:
            index.close()

    def _ingest_with_dulwich(self) -> list[ObjectID]:
        try:
            pack = self._store.add_thin_pack(
                self._proto.read, self._proto.recv, max_input_size=self._max_input_size
            )
        except PackInputTooLarge:
            raise PackRefused("pack exceeds maximum allowed size (receive.maxInputSize)") from None
        except (
            OSError, ChecksumMismatch, ApplyDeltaError, ObjectFormatException, zlib.error,
            AssertionError, ValueError,
        ) as exc:  # fmt: skip
            raise PackRefused(f"index-pack failed: {type(exc).__name__}") from None
        return [sha_to_hex(entry[0]) for entry in pack.index.iterentries()]

    def _apply_pack(
        self, refs: list[tuple[ObjectID, ObjectID, Ref]]
    ) -> Iterator[tuple[bytes, bytes]]:
        self._result.updates = len(refs)
        received: list[ObjectID] = []
        store = self._store
        if any(new != ZERO.encode() for _old, new, _ref in refs):
            try:
                received = self._ingest_with_git() if self._use_git else self._ingest_with_dulwich()
            except PackRefused as exc:
                self._result.unpack_error = str(exc)
                yield (b"unpack", str(exc).encode())
                return
            store = DiskObjectStore(str(self._repo_dir / "objects"))  # sees the new pack
            self._progress(f"cis: received {len(received)} objects")
        count = len(received)
        listed = [sha.decode() for sha in received] if count <= MAX_LISTED_OBJECTS else []
        self._result.objects = count
        yield (b"unpack", b"ok")
        requests: list[UpdateRequest] = []
        refused: dict[int, bytes] = {}
        for index, (old, new, ref) in enumerate(refs):
            try:
                name = validate_ref(ref.decode("utf-8"))
            except (InvalidName, UnicodeDecodeError):
                refused[index] = b"funny refname"
                continue
            # git refuses a non-fast-forward on its side unless forced, against the value it
            # was shown; the compare-and-swap on ``old`` makes that check hold here too.
            requests.append(UpdateRequest(name, old.decode(), new.decode(), force=True))
        try:
            statuses = iter(self._apply_updates(store, requests, listed, count))
        finally:
            if store is not self._store:
                store.close()
        for index, (_old, _new, ref) in enumerate(refs):
            if index in refused:
                yield (ref, refused[index])
                continue
            reason = next(statuses)
            if reason is None:
                self._result.accepted += 1
                yield (ref, b"ok")
            else:
                yield (ref, reason.encode())


def serve_receive_pack(
    store: DiskObjectStore,
    repo_dir: Path,
    refs: dict[str, str],
    stream: DuplexStream,
    apply_updates: ApplyUpdates,
    *,
    max_input_size: int | None,
    use_git: bool = GIT is not None,
) -> PushResult:
    """Serve one push. Blocking. (``HEAD`` is not advertised to a push, as git's own
    receive-pack does not: only refs under ``refs/`` can be pushed.)"""
    repo = _ServedRepo(store, refs, None)
    result = PushResult()
    proto = _protocol(stream)
    handler = _ReceivePack(
        repo, proto, repo_dir=repo_dir, apply_updates=apply_updates,
        max_input_size=max_input_size, result=result, use_git=use_git,
    )  # fmt: skip
    handler.handle()
    return result
