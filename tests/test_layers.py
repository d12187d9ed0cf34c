"""The package's layers import one way: the model knows nothing of training, data, decoding or evaluation.

Every `flmjax` import in flmjax/ (function-level ones included) is read with `ast`, without importing
anything, and checked against the table below; a new subpackage must be given its place in it.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flmjax"

# layer -> the layers its modules may import (besides their own)
BASE = {"base"}
ALLOWED = {
    "base": set(),  # errors, tokens, config, sharding, audio
    "mimi": BASE,
    # Checkpoint files <-> parameters: interop reads the model's parameter layouts (int8 kernels), the model
    # loads files through interop; neither knows of training, data, decoding or evaluation.
    "interop": BASE | {"model"},
    "model": BASE | {"interop"},
    "data": BASE | {"mimi"},
    "train": BASE | {"mimi", "interop", "model", "data"},
    "infer": BASE | {"mimi", "interop", "model", "data"},
    "eval": BASE | {"mimi", "interop", "model", "data", "infer", "api"},
    "configs": BASE | {"data", "train"},  # the named stage configs
    "aot": BASE,  # TPU/GPU chip tables and the compiled programs' costs (launch/aot.py)
    "reference": BASE,  # PyTorch re-statements of the release (parity tests, bench_infer): know nothing of ours
    "cli": BASE | {"mimi", "interop", "model", "data", "train", "configs", "infer", "eval", "aot", "reference", "api"},
    "api": {"model"},  # flmjax/__init__.py: `from flmjax import FLMAudio`
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts == ["flmjax"]:
        return "api"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    assert (PACKAGE / f"{parts[1]}.py").is_file(), f"{module}: no such flmjax module"
    return "base"


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute flmjax import; `from flmjax import x` names module flmjax.x if one exists."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "flmjax"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flmjax":
            assert node.level == 0
            if node.module == "flmjax":
                for a in node.names:
                    sub = PACKAGE / a.name
                    exists = sub.is_dir() or sub.with_suffix(".py").is_file()
                    out.append((node.lineno, f"flmjax.{a.name}" if exists else "flmjax"))
            else:
                out.append((node.lineno, node.module))
    return out


def test_layers_import_one_way():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module)
        assert own in ALLOWED, f"{path}: subpackage {own!r} has no place in tests/test_layers.py's table"
        for line, target in imported(ast.parse(path.read_text(), str(path))):
            other = layer_of(target)
            if other != own and other not in ALLOWED[own]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {target} ({other})")
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_wrong_way_import():
    tree = ast.parse("def f():\n    from flmjax.train import checkpoint\nfrom flmjax import audio, FLMAudio\n")
    found = sorted((line, layer_of(m)) for line, m in imported(tree))
    assert found == [(2, "train"), (3, "api"), (3, "base")]
    assert "train" not in ALLOWED["model"]
