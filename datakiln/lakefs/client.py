"""The one place datakiln talks to a lakeFS server.

`LakeFS` wraps the high-level `lakefs` client (0.16.0, with `lakefs-sdk`
1.86.0 to match the server) and gives every call the same treatment:

- a refused key fails at once, naming where the key came from; retrying a
  wrong key cannot succeed;
- a server that is down, or answers 502, 503 or 504, is retried a bounded
  number of times with exponential backoff, then fails naming the endpoint;
- every request has a timeout;
- any other refusal becomes a `LakeFSError` that names the operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import lakefs
import urllib3
from lakefs.exceptions import (
    LakeFSException,
    NotAuthorizedException,
    NotFoundException,
    ServerException,
    api_exception_handler,
)
from lakefs.models import ObjectInfo
from lakefs_sdk.models.branch_creation import BranchCreation
from lakefs_sdk.models.branch_protection_rule import BranchProtectionRule
from lakefs_sdk.models.repository_creation import RepositoryCreation
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from datakiln.errors import LakeFSError
from datakiln.lakefs.credentials import (
    Credentials,
    CredentialsProvider,
    default_provider,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses a proxy or a restarting server answers with; worth another try.
_TRANSIENT_STATUSES = {502, 503, 504}


class LakeFSAuthError(LakeFSError):
    """The server refused the access key."""


class LakeFSUnavailableError(LakeFSError):
    """The server could not be reached, or kept answering 'unavailable'."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is tried against an unwell server."""

    attempts: int = 5
    first_wait: float = 0.5
    max_wait: float = 8.0
    connect_timeout: float = 5.0
    # The longest wait for a server's first byte. A server that says nothing
    # for a minute is hung, not slow: that is not retried.
    read_timeout: float = 60.0


@dataclass(frozen=True)
class ObjectEntry:
    path: str
    checksum: str
    size: int


class LakeFS:
    """A connection to one lakeFS server with one set of credentials."""

    def __init__(
        self, credentials: Credentials, retry: RetryPolicy | None = None
    ) -> None:
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        # lakefs.Client's __init__ is not annotated upstream.
        self.client = lakefs.Client(  # type: ignore[no-untyped-call]
            host=credentials.endpoint,
            username=credentials.access_key_id,
            password=credentials.secret_access_key,
        )
        self._set_transport()

    @property
    def endpoint(self) -> str:
        return self.credentials.endpoint

    def __repr__(self) -> str:
        return f"LakeFS({self.endpoint!r})"

    # ----------------------------------------------------------- every call

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        passthrough: tuple[type[LakeFSException], ...] = (),
    ) -> T:
        """Run `fn` (one or more requests) with retries and clear errors.

        Exceptions listed in `passthrough` (say NotFoundException) reach the
        caller untouched, for it to explain in its own terms.
        """
        started = time.monotonic()
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_exponential(
                multiplier=self.retry.first_wait, max=self.retry.max_wait
            ),
            retry=retry_if_exception(_transient),
            before_sleep=self._log_retry(what),
            reraise=True,
        )

        def attempt() -> T:
            # Raw SDK calls raise lakefs_sdk exceptions; make them lakefs ones.
            with api_exception_handler():
                return fn()

        try:
            return retrying(attempt)
        except passthrough:
            raise
        except NotAuthorizedException:
            raise LakeFSAuthError(
                f"lakeFS at {self.endpoint} refused the access key "
                f"{self.credentials.shown_key_id} from "
                f"{self.credentials.origin or 'the caller'} while {what}. Check "
                f"that key and secret belong to this server; for the local server "
                f"of this checkout use the lakectl.yaml that `make lakefs` names."
            ) from None
        except Exception as exc:
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                raise LakeFSUnavailableError(
                    f"lakeFS at {self.endpoint} did not answer within "
                    f"{self.retry.read_timeout:g} s while {what}: it accepts "
                    f"connections but is hung or overloaded. Check the server (its "
                    f"log), then run the command again."
                ) from None
            if _transient(exc):
                raise LakeFSUnavailableError(
                    f"lakeFS at {self.endpoint} is unavailable: {what} failed "
                    f"{self.retry.attempts} times over "
                    f"{time.monotonic() - started:.1f} s ({_describe(exc)}). Check "
                    f"that the server is running (`make lakefs` starts the local "
                    f"one), then run the command again."
                ) from None
            if isinstance(exc, LakeFSException):
                raise LakeFSError(
                    f"lakeFS at {self.endpoint} refused {what}: {_describe(exc)}"
                ) from None
            raise

    def check_access(self) -> str:
        """Fail now, not halfway through, if the server or the key is wrong."""
        user = self.call(
            "checking the credentials",
            lambda: self.client.sdk_client.auth_api.get_current_user(),
        )
        return str(user.user.id)

    # ----------------------------------------------------------- repository

    def repository(self, name: str) -> lakefs.Repository:
        return lakefs.Repository(name, client=self.client)

    def require_repository(self, name: str) -> lakefs.Repository:
        repo = self.repository(name)
        try:
            self.call(
                f"reading repository {name}",
                lambda: self.client.sdk_client.repositories_api.get_repository(name),
                passthrough=(NotFoundException,),
            )
        except NotFoundException:
            raise LakeFSError(
                f"lakeFS at {self.endpoint} has no repository '{name}'. Create it "
                f"(`make lakefs` creates the one conf/ names on the local server), "
                f"or fix publish.lakefs_repo / the source's lakefs:// address."
            ) from None
        return repo

    def ensure_repository(
        self, name: str, storage_namespace: str, default_branch: str = "main"
    ) -> bool:
        """Create repository `name` unless it exists; True if it was created."""
        try:
            self.call(
                f"reading repository {name}",
                lambda: self.client.sdk_client.repositories_api.get_repository(name),
                passthrough=(NotFoundException,),
            )
            return False
        except NotFoundException:
            pass
        creation = RepositoryCreation.from_dict(
            {
                "name": name,
                "storage_namespace": storage_namespace,
                "default_branch": default_branch,
            }
        )
        self.call(
            f"creating repository {name}",
            lambda: self.client.sdk_client.repositories_api.create_repository(creation),
        )
        return True

    def protect_branch(self, repo: str, pattern: str) -> None:
        """Protect branches matching `pattern`: changes arrive only by merge."""
        api = self.client.sdk_client.repositories_api
        rules = self.call(
            f"reading branch protection of {repo}",
            lambda: api.get_branch_protection_rules(repo),
        )
        if any(rule.pattern == pattern for rule in rules):
            return
        wanted = [*rules, BranchProtectionRule.from_dict({"pattern": pattern})]
        self.call(
            f"protecting branch {pattern} of {repo}",
            lambda: api.set_branch_protection_rules(repo, wanted),
        )

    def protected_patterns(self, repo: str) -> list[str]:
        api = self.client.sdk_client.repositories_api
        rules = self.call(
            f"reading branch protection of {repo}",
            lambda: api.get_branch_protection_rules(repo),
        )
        return [str(rule.pattern) for rule in rules]

    # ------------------------------------------------------------ refs

    def resolve(self, repo: str, ref: str) -> str:
        """The commit id a branch, tag or commit id stands for now."""
        try:
            commit = self.call(
                f"resolving {ref} in {repo}",
                lambda: self.client.sdk_client.commits_api.get_commit(repo, ref),
                passthrough=(NotFoundException,),
            )
        except NotFoundException:
            # The repository first: its absence is reported in its own terms.
            self.require_repository(repo)
            raise LakeFSError(
                f"lakefs://{repo}/{ref}: no such branch, tag or commit on "
                f"{self.endpoint}. Check the address, or import data first with "
                f"`datakiln lakefs import <folder> lakefs://{repo}/{ref}/<path>`."
            ) from None
        return str(commit.id)

    def branch_head(self, repo: str, branch: str) -> str | None:
        """The commit a branch points at, or None if there is no such branch."""
        try:
            ref = self.call(
                f"reading branch {branch} of {repo}",
                lambda: self.client.sdk_client.branches_api.get_branch(repo, branch),
                passthrough=(NotFoundException,),
            )
        except NotFoundException:
            return None
        return str(ref.commit_id)

    def create_branch(self, repo: str, branch: str, source: str) -> None:
        creation = BranchCreation.from_dict({"name": branch, "source": source})
        self.call(
            f"creating branch {branch} from {source} in {repo}",
            lambda: self.client.sdk_client.branches_api.create_branch(repo, creation),
        )

    def delete_branch(self, repo: str, branch: str) -> None:
        self.call(
            f"deleting branch {branch} of {repo}",
            lambda: self.client.sdk_client.branches_api.delete_branch(repo, branch),
        )

    def commit_metadata(self, repo: str, ref: str) -> dict[str, str]:
        commit = self.call(
            f"reading commit {ref} of {repo}",
            lambda: self.client.sdk_client.commits_api.get_commit(repo, ref),
        )
        return dict(commit.metadata or {})

    def is_ancestor(self, repo: str, commit: str, branch: str) -> bool:
        """Whether `commit` is already part of `branch`'s history."""
        base = self.call(
            f"finding the merge base of {commit} and {branch} in {repo}",
            lambda: self.client.sdk_client.refs_api.find_merge_base(
                repo, commit, branch
            ),
        )
        return str(base.base_commit_id) == commit

    # ------------------------------------------------------------ objects

    def list_objects(self, repo: str, ref: str, prefix: str) -> dict[str, ObjectEntry]:
        """Every object under `prefix` at `ref`, with its checksum, by path."""

        def listing() -> dict[str, ObjectEntry]:
            found = {}
            for info in lakefs.Reference(repo, ref, client=self.client).objects(
                prefix=prefix
            ):
                if not isinstance(info, ObjectInfo):
                    continue
                found[info.path] = ObjectEntry(
                    info.path, str(info.checksum), int(info.size_bytes or 0)
                )
            return found

        return self.call(f"listing lakefs://{repo}/{ref}/{prefix}", listing)

    def uncommitted(self, repo: str, branch: str) -> list[str]:
        """Paths with uncommitted changes on `branch`."""

        def listing() -> list[str]:
            changes = lakefs.Branch(repo, branch, client=self.client).uncommitted()
            return [change.path for change in changes]

        return self.call(f"listing uncommitted changes on {repo}/{branch}", listing)

    def changed_paths(
        self, repo: str, left: str, right: str, prefix: str = ""
    ) -> dict[str, str]:
        """Paths under `prefix` that differ between two refs, with the change type."""

        def listing() -> dict[str, str]:
            diff = lakefs.Reference(repo, left, client=self.client).diff(
                right, prefix=prefix or None
            )
            return {change.path: change.type for change in diff}

        return self.call(f"comparing {left} with {right} in {repo}", listing)

    def merge_base(self, repo: str, source: str, destination: str) -> str:
        base = self.call(
            f"finding the merge base of {source} and {destination} in {repo}",
            lambda: self.client.sdk_client.refs_api.find_merge_base(
                repo, source, destination
            ),
        )
        return str(base.base_commit_id)

    def read_bytes(self, repo: str, ref: str, path: str) -> bytes:
        def read() -> bytes:
            obj = lakefs.StoredObject(repo, ref, path, client=self.client)
            with obj.reader(mode="rb", pre_sign=False) as handle:
                data = handle.read()
            assert isinstance(data, bytes)
            return data

        return self.call(f"reading lakefs://{repo}/{ref}/{path}", read)

    def open_object(self, repo: str, ref: str, path: str) -> Iterator[bytes]:
        """Stream an object's bytes in chunks (for large raw files)."""
        obj = lakefs.StoredObject(repo, ref, path, client=self.client)
        reader = self.call(
            f"opening lakefs://{repo}/{ref}/{path}",
            lambda: obj.reader(mode="rb", pre_sign=False),
        )
        with reader:
            while True:
                chunk = self.call(
                    f"reading lakefs://{repo}/{ref}/{path}",
                    lambda: reader.read(8 << 20),
                )
                if not chunk:
                    return
                assert isinstance(chunk, bytes)
                yield chunk

    # ------------------------------------------------------------ plumbing

    def _set_transport(self) -> None:
        # The SDK's pool retries connection errors itself, without backoff and
        # without a timeout; all retrying happens in `call` instead. Uploads go
        # through this same pool (lakefs.ObjectWriter uses it directly).
        config = self.client.config
        rest = self.client.sdk_client.objects_api.api_client.rest_client
        rest.pool_manager = _TimedPoolManager(
            num_pools=4,
            maxsize=4,
            retries=False,
            timeout=urllib3.Timeout(
                connect=self.retry.connect_timeout, read=self.retry.read_timeout
            ),
            cert_reqs="CERT_REQUIRED" if config.verify_ssl else "CERT_NONE",
            ca_certs=config.ssl_ca_cert,
        )

    def _log_retry(self, what: str) -> Callable[[RetryCallState], None]:
        def log(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "lakeFS at %s: %s failed (%s), attempt %d of %d; retrying in %.1f s",
                self.endpoint,
                what,
                _describe(exc) if exc else "unknown",
                state.attempt_number,
                self.retry.attempts,
                wait,
            )

        return log


def connect(
    provider: CredentialsProvider | None = None,
    retry: RetryPolicy | None = None,
    check: bool = True,
) -> LakeFS:
    """A client for the configured server; by default the key is checked now."""
    credentials = (provider or default_provider())()
    lake = LakeFS(credentials, retry)
    if check:
        lake.check_access()
    return lake


class _TimedPoolManager(urllib3.PoolManager):
    """A pool whose own timeouts hold where a request names none.

    The SDK passes `timeout=None` with every API call, which urllib3 takes as
    "wait forever", so a hung server would hang every command.
    """

    # The signature PoolManager.urlopen has; urllib3 ignores the same mismatch
    # with RequestMethods.urlopen.
    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        if kw.get("timeout", urllib3.util.Timeout.DEFAULT_TIMEOUT) is None:
            del kw["timeout"]
        return super().urlopen(method, url, redirect, **kw)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ServerException):
        return exc.status_code in _TRANSIENT_STATUSES
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return False
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServerException):
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        return f"HTTP {exc.status_code} {exc.reason or ''}".strip() + (
            f": {message}" if message else ""
        )
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"


def object_metadata(values: dict[str, Any]) -> dict[str, str]:
    """Commit metadata must be strings; keep keys sorted for stable logs."""
    return {str(key): str(values[key]) for key in sorted(values)}
