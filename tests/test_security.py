"""Security audit of the package source, plus the behaviours it promises.

The audit parses every module under carbonbench/ (ast, not grep, so that comments,
docstrings and ``model.eval()`` do not count) and refuses:
unsafe YAML loading, ``torch.load`` without ``weights_only=True``, unpickling, ``eval``/
``exec``, shell commands, and anything that could fetch over the network at run time.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest
import torch
from support import ROOT

PACKAGE = ROOT / "carbonbench"
SOURCES = sorted(PACKAGE.rglob("*.py"))

UNSAFE_YAML = {
    "load",
    "load_all",
    "unsafe_load",
    "unsafe_load_all",
    "full_load",
    "full_load_all",
    "Loader",
    "UnsafeLoader",
    "FullLoader",
    "add_constructor",
    "add_multi_constructor",
}
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib", "jsonpickle"}
PICKLE_ALLOWED = {"UnpicklingError", "PicklingError"}  # catching pickle's errors is fine
NETWORK_MODULES = {
    "requests",
    "urllib.request",
    "urllib3",
    "http.client",
    "httpx",
    "aiohttp",
    "ftplib",
    "smtplib",
    "telnetlib",
    "websocket",
    "websockets",
    "huggingface_hub",
    "xmlrpc.client",
    "paramiko",
}
SOCKET_ALLOWED = {"gethostname", "AF_INET", "AF_INET6"}
# The one module that may use huggingface_hub, and only its cache functions: reading the
# local cache (carbonbench.opt.hub). Its snapshot_download calls must pass
# local_files_only=True, checked below like from_pretrained.
HUB_MODULE = "carbonbench/opt/hub.py"
HUB_CACHE_ONLY = {
    "snapshot_download",
    "scan_cache_dir",
    "try_to_load_from_cache",
    "constants",
    "HFValidationError",
    "LocalEntryNotFoundError",
    "CacheNotFound",
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def audit(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    problems = []
    cache_reader = path.relative_to(root).as_posix() == HUB_MODULE

    def flag(node, what):
        problems.append(f"{path.relative_to(root)}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNPICKLERS - {"pickle"}:
                    flag(node, f"imports {alias.name}")
                if alias.name in NETWORK_MODULES or alias.name.split(".")[0] in NETWORK_MODULES:
                    flag(node, f"imports network module {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {a.name for a in node.names}
            if module == "yaml" and names & UNSAFE_YAML:
                flag(node, f"from yaml import {names & UNSAFE_YAML}")
            if module.split(".")[0] in UNPICKLERS and not names <= PICKLE_ALLOWED:
                flag(node, f"from {module} import {names}")
            hub_cache = cache_reader and module.split(".")[0] == "huggingface_hub" and names <= HUB_CACHE_ONLY
            if (module in NETWORK_MODULES or module.split(".")[0] in NETWORK_MODULES) and not hub_cache:
                flag(node, f"imports from network module {module}")
            if module == "torch" and "load" in names:
                flag(node, "from torch import load (use torch.load(..., weights_only=True))")
            if module == "os" and names & {"system", "popen"}:
                flag(node, f"from os import {names & {'system', 'popen'}}")
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            head, _, attr = name.partition(".")
            if head == "yaml" and attr in UNSAFE_YAML:
                flag(node, f"yaml.{attr} (use yaml.safe_load)")
            if head in UNPICKLERS and attr and attr not in PICKLE_ALLOWED:
                flag(node, f"{name}: unpickling")
            if head == "socket" and attr and attr not in SOCKET_ALLOWED:
                flag(node, f"{name}: network socket")
            if name in ("torch.hub", "os.system", "os.popen"):
                flag(node, name)
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func in ("eval", "exec", "compile", "__import__"):
                flag(node, f"{func}()")
            if func in ("torch.load", "torch.serialization.load") and not _keyword_true(node, "weights_only"):
                flag(node, f"{func}() without weights_only=True")
            if _keyword_true(node, "shell"):
                flag(node, f"{func}(..., shell=True)")
            if func.endswith(("from_pretrained", "snapshot_download")) and not _keyword_true(node, "local_files_only"):
                flag(node, f"{func}() without local_files_only=True (could download from the hub)")
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and id(arg) not in docstrings
                    and arg.value.startswith(("http://", "https://", "ftp://"))
                ):
                    flag(node, f"{func}() is given the URL {arg.value!r}")
    return problems


def test_the_audit_sees_the_whole_package():
    assert len(SOURCES) > 20
    assert PACKAGE / "opt" / "checkpoint.py" in SOURCES


def test_package_source_passes_the_security_audit():
    problems = [p for path in SOURCES for p in audit(path)]
    assert problems == []


BAD_SNIPPETS = {
    "yaml.load(text, Loader=yaml.Loader)": "yaml.load",
    "yaml.full_load(text)": "yaml.full_load",
    "torch.load(path)": "without weights_only=True",
    "torch.load(path, weights_only=False)": "without weights_only=True",
    "pickle.loads(data)": "unpickling",
    "eval(text)": "eval()",
    "exec(code)": "exec()",
    "subprocess.run(cmd, shell=True)": "shell=True",
    "os.system('ls')": "os.system",
    "import requests": "network module requests",
    "from urllib.request import urlopen": "urllib.request",
    "socket.create_connection(('example.org', 80))": "network socket",
    "AutoModel.from_pretrained('facebook/opt-125m')": "local_files_only",
    "snapshot_download('facebook/opt-125m')": "local_files_only",
    "from huggingface_hub import snapshot_download": "network module huggingface_hub",  # outside opt/hub.py
    "fetch('https://example.org/grid.csv')": "URL",
}


@pytest.mark.parametrize("code, found", list(BAD_SNIPPETS.items()), ids=list(BAD_SNIPPETS))
def test_the_audit_catches_each_pattern(code, found, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        f'"""Docstrings may say https://example.org."""\nimport os, pickle, subprocess, socket, torch, yaml\n{code}\n'
    )
    problems = audit(path, tmp_path)
    assert any(found in p for p in problems), problems


@pytest.mark.parametrize(
    "code, ok",
    [
        ("from huggingface_hub import snapshot_download, scan_cache_dir", True),
        ("from huggingface_hub.utils import LocalEntryNotFoundError", True),
        ("snapshot_download(repo, cache_dir=c, local_files_only=True)", True),
        ("from huggingface_hub import hf_hub_download", False),
        ("from huggingface_hub import HfApi", False),
        ("snapshot_download(repo, cache_dir=c)", False),
    ],
)
def test_only_the_hub_module_reads_the_cache_and_never_downloads(code, ok, tmp_path):
    path = tmp_path / HUB_MODULE
    path.parent.mkdir(parents=True)
    path.write_text(code + "\n")
    assert (audit(path, tmp_path) == []) is ok


def test_good_code_passes_the_audit(tmp_path):
    path = tmp_path / "good.py"
    path.write_text(
        '"""See https://arxiv.org/abs/2205.01068."""\nimport pickle, socket, torch, yaml\n'
        "data = yaml.safe_load(text)\nt = torch.load(p, weights_only=True, map_location='cpu')\n"
        "model.eval()\nhost = socket.gethostname()\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass\n"
    )
    assert audit(path, tmp_path) == []


# -- the behaviours ---------------------------------------------------------------------
def test_safetensors_are_preferred_and_a_malicious_pickle_never_runs(tmp_path):
    """A directory with both: the .bin (which would run code if unpickled) is never opened."""
    from safetensors.torch import save_file

    import carbonbench.opt as opt
    from carbonbench.opt.card import Architecture
    from carbonbench.opt.checkpoint import check_checkpoint

    arch = Architecture(n_layers=1, n_heads=2, d_model=16, ffn_dim=32, vocab_size=100, max_positions=64)
    state = {f"model.decoder.{k}": v.clone().contiguous() for k, v in opt.build(arch).state_dict().items()}
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "opt",
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "hidden_size": 16,
                "ffn_dim": 32,
                "vocab_size": 100,
                "max_position_embeddings": 64,
                "word_embed_proj_dim": 16,
            }
        )
    )
    save_file(state, tmp_path / "model.safetensors")
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    check_checkpoint(tmp_path)
    model = opt.load(tmp_path)
    assert torch.equal(model.state_dict()["layers.0.fc1.weight"], state["model.decoder.layers.0.fc1.weight"])
    assert not marker.exists()

    (tmp_path / "model.safetensors").unlink()  # now only the pickle is left: refused, not run
    from carbonbench.errors import CheckpointError

    with pytest.raises(CheckpointError, match="weights_only=True refused it"):
        check_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="weights_only=True refused it"):
        opt.load(tmp_path)
    assert not marker.exists()


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """A few hundred bytes of YAML aliases expand to 10^9 strings: the error must not try to print them."""
    from carbonbench import scenario as sc
    from carbonbench.errors import ConfigError

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    anchors = "\n".join("  - " + line.split(": ", 1)[1] for line in lines)
    path = tmp_path / "bomb.yaml"
    start = time.perf_counter()
    path.write_text(f"description:\n{anchors}\nname: *i\n")
    with pytest.raises(ConfigError, match=r"name: expected a string \(got \[\["):
        sc.load(path)
    path.write_text(
        f"description:\n{anchors}\nname: t\nmodels: [opt-tiny]\nbatch_sizes: *i\n"
        "workloads: {prefill: {prompt_tokens: [8]}}\n"
    )
    with pytest.raises(ConfigError, match=r"batch_sizes\[0\]: expected an integer"):
        sc.load(path)
    assert time.perf_counter() - start < 5
