"""Models people already have: checkpoint directories and Hugging Face ids from the local cache.

A model entry (in a scenario's ``models:``, ``opt.load``, ``carbonbench plan``) is read as:

1. an existing path: a checkpoint directory (or a card file) -- a path always wins;
2. otherwise ``org/name`` (one slash, the characters Hugging Face allows) is a Hugging Face
   model id, looked up in the local cache only: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
   else ``~/.cache/huggingface/hub``, the order huggingface_hub itself uses;
3. otherwise a card name (``model/*.yaml``).

A cached model is a snapshot directory (``models--org--name/snapshots/<commit>/``, the
one ``refs/main`` names): an ordinary checkpoint directory, read by ``checkpoint``.
Nothing is downloaded: the look-up passes ``local_files_only=True`` and, for its length,
puts huggingface_hub in offline mode (what ``HF_HUB_OFFLINE=1`` does), so a request made
by mistake fails instead of reaching the network.

huggingface_hub reads ``refs/main`` and ``trees/<commit>.json`` with a plain open, which
blocks forever on a named pipe, and joins the ref's text into a path. Both files are
checked here first (regular, small, the ref a commit hash), and the cache is listed for
"did you mean" hints by its folder names only, without reading a file.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from carbonbench.config import closest
from carbonbench.errors import ConfigError
from carbonbench.opt.card import Card, find_card
from carbonbench.reading import MAX_CONFIG, UnreadableFile, check_regular, read_text

# A namespace and a name, each as huggingface_hub's validate_repo_id allows: ASCII
# letters, digits, "_", "-" and ".", starting and ending with a letter, digit or "_".
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"{_PART}/{_PART}", re.ASCII)
_COMMIT = re.compile(r"[0-9a-f]{40}", re.ASCII)


def is_hub_id(entry: str | Path) -> bool:
    """Whether entry has the form of a Hugging Face model id (org/name); no look-up."""
    text = str(entry)
    return (
        _HUB_ID.fullmatch(text) is not None
        and "--" not in text
        and ".." not in text
        and not text.endswith((".yaml", ".yml", ".git"))
    )


def cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment now (as huggingface_hub reads it at import)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def snapshot(repo_id: str) -> Path:
    """The cached snapshot directory of repo_id (its config.json checked), or one ConfigError line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, LocalEntryNotFoundError

    cache = cache_dir()
    _check_cache_files(cache / f"models--{repo_id.replace('/', '--')}")
    try:
        with _offline():
            path = Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except HFValidationError as exc:
        raise ConfigError(f"{repo_id}: not a valid Hugging Face model id ({_one_line(exc)})") from None
    except LocalEntryNotFoundError as exc:
        if type(exc).__name__ == "IncompleteSnapshotError":  # huggingface_hub >= 1.0 checks its file list
            raise ConfigError(
                f"{repo_id}: the cached snapshot in {cache} is incomplete ({_one_line(exc)}); "
                f"finish it {_how_to_get(repo_id)}"
            ) from None
        raise ConfigError(_missing(repo_id, cache)) from None
    if not os.path.lexists(path / "config.json"):
        raise ConfigError(
            f"{repo_id}: the cached snapshot {path} has no config.json, so it is not a complete "
            f"checkpoint; get the whole model {_how_to_get(repo_id)}"
        )
    return path


def card_for(entry: str | Path) -> Card:
    """The card for a model entry: a checkpoint directory, a Hugging Face id, a card name or file."""
    from carbonbench.opt.hf_config import arch_from_hf_config

    path = Path(entry)
    if path.is_dir():
        config = path / "config.json"
        if not os.path.lexists(config):
            raise ConfigError(f"{path}: not a checkpoint directory (no config.json)")
        return Card(name=path.name, architecture=arch_from_hf_config(config), checkpoint=str(path), path=str(config))
    if is_hub_id(entry):
        directory = snapshot(str(entry))
        config = directory / "config.json"
        # Named by its id: the weights are that repository's, unlike the random-weight card of the same size.
        return Card(
            name=str(entry), architecture=arch_from_hf_config(config), checkpoint=str(directory), path=str(config)
        )
    return find_card(entry)


def cached_models(cache: Path | None = None) -> list[str]:
    """The model ids in the cache, from its models--org--name folders; [] when there is no cache.

    Names only: huggingface_hub's scan_cache_dir would read every repository's refs
    (any of which may be a named pipe) and walk every snapshot.
    """
    try:
        names = os.listdir(cache or cache_dir())
    except (OSError, ValueError):
        return []
    return sorted(
        n.removeprefix("models--").replace("--", "/", 1)
        for n in names
        if n.startswith("models--") and "--" in n.removeprefix("models--")
    )


def _check_cache_files(storage: Path) -> None:
    """What huggingface_hub will read of this repository: refs/main, a commit hash, and
    its commit's tree listing, each a small regular file."""
    ref = storage / "refs" / "main"
    if not os.path.lexists(ref):
        return
    try:
        commit = read_text(ref, 4096)
    except UnreadableFile as exc:
        raise ConfigError(f"{exc} (in the Hugging Face cache)") from None
    if not _COMMIT.fullmatch(commit):
        raise ConfigError(
            f"{ref}: not a commit hash (got {commit[:60]!r}); the cache is damaged: "
            "remove this repository's folder and download it again"
        )
    tree = storage / "trees" / f"{commit}.json"
    if os.path.lexists(tree):
        try:
            if check_regular(tree).st_size > MAX_CONFIG * 16:
                raise ConfigError(f"{tree}: too large for a tree listing")
        except UnreadableFile as exc:
            raise ConfigError(f"{exc} (in the Hugging Face cache)") from None


@contextlib.contextmanager
def _offline():
    # huggingface_hub reads HF_HUB_OFFLINE once, at import, into this constant, and its
    # HTTP layer checks the constant before every request; setting the variable now
    # would come too late.
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _how_to_get(repo_id: str) -> str:
    return (
        f"on a machine with network (`hf download {repo_id}`; `huggingface-cli download {repo_id}` "
        "before huggingface_hub 1.0)"
    )


def _missing(repo_id: str, cache: Path) -> str:
    where = f"the Hugging Face cache {cache}" + ("" if cache.is_dir() else " (which does not exist)")
    return (
        f"{repo_id}: no such checkpoint directory, and not in {where}{closest(repo_id, cached_models(cache))}; "
        f"carbonbench never downloads: get it {_how_to_get(repo_id)}, then copy its "
        f"models--{repo_id.replace('/', '--')} folder into this cache, or set HF_HUB_CACHE (or HF_HOME) to a "
        "cache that has it"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
