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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dulwich.errors import (
    GitProtocolError,
)
from dulwich.object_store import DiskObjectStore, MissingObjectFinder
from dulwich.objects import ObjectID
from dulwich.pack import write_pack_from_container
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
from cis.skills.git.packs import GIT, PackRefused, index_pack, write_pack
from cis.skills.git.repos import UpdateRequest
from cis.skills.git.schema import MAX_LISTED_OBJECTS, ZERO

__all__ = ["GIT", "PushResult", "serve_receive_pack", "serve_upload_pack"]

SHA1_FORMAT: Final = b"object-format=sha1"
PIPE_CHUNK: Final = 65_515  # one side-band-64k packet
ApplyUpdates = Callable[[DiskObjectStore, list[UpdateRequest], list[str], int], list[str | None]]
"""``(store, requests, object ids listed, object count) -> per request None or a reason``."""


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
        progress = None if self.has_capability(CAPABILITY_NO_PROGRESS) else self.progress
        if shallow or self.filter_spec is not None:
            self._send_with_dulwich(store, wants, haves, walker)
        else:
            write_pack(
                self._repo_dir, store, wants, haves, self.write_pack_data,
                thin=self.has_capability(CAPABILITY_THIN_PACK),
                ofs_delta=self.has_capability(CAPABILITY_OFS_DELTA),
                progress=progress, use_git=self._use_git,
            )  # fmt: skip
        self.proto.write_pkt_line(None)

    def _send_with_dulwich(
        self,
        store: DiskObjectStore,
        wants: list[ObjectID],
        haves: list[ObjectID],
        walker: _ProtocolGraphWalker,
    ) -> None:
        """Shallow and filtered fetches: dulwich's own object walk knows about them."""
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

    def _apply_pack(
        self, refs: list[tuple[ObjectID, ObjectID, Ref]]
    ) -> Iterator[tuple[bytes, bytes]]:
        self._result.updates = len(refs)
        received: list[ObjectID] = []
        store = self._store
        if any(new != ZERO.encode() for _old, new, _ref in refs):
            try:
                received = index_pack(
                    self._repo_dir, self._store, self._proto.recv,
                    max_input_size=self._max_input_size, use_git=self._use_git,
                    read_exact=self._proto.read,
                )  # fmt: skip
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
