"""The two backends mirror each other: the same model classes, methods and attribute names in
the same order, and the same public training functions and Trainer methods with the same
signatures. What genuinely differs is tagged ``# [torch≠jax]`` in the source."""

import ast
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TAG = "[torch≠jax]"

# forward() in torch is __call__() in Flax NNX
METHOD_NAMES = {"forward": "__call__"}
# torch-only methods: torch builds its layers with default init and then walks them (apply) to
# re-initialise; Flax passes nanoGPT's initialisers to each layer as it is built, so JAX has
# no separate pass (the JAX GPT.__init__ says so on a tagged line)
TORCH_ONLY_METHODS = {("GPT", "_init_weights")}
# torch-only attributes: the causal mask buffer (JAX builds it in __call__) and the lm_head
# Linear (JAX ties the head with wte.attend); both are tagged lines in the JAX file
TORCH_ONLY_ATTRIBUTES = {("CausalSelfAttention", "mask"), ("GPT", "lm_head")}


def _classes(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(class name, method names, names assigned as self.X or register_buffer("X") in __init__)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name in JAX_ONLY_CLASSES:
            continue
        methods = [f.name for f in node.body if isinstance(f, ast.FunctionDef)]
        init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        attributes = []
        for sub in ast.walk(init):
            targets = sub.targets if isinstance(sub, ast.Assign) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    attributes.append(t.attr)
            if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                    and sub.func.attr == "register_buffer" and isinstance(sub.args[0], ast.Constant)):
                attributes.append(sub.args[0].value)
        # the keys of transformer = ModuleDict(dict(...)) / nnx.Dict(dict(...))
        for sub in ast.walk(init):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "dict":
                attributes += [k.arg for k in sub.keywords]
        out.append((node.name, methods, attributes))
    return out


# JAX-only layer classes: nnx.Linear on the 2-D view of its input (torch's nn.Linear does that
# itself); tagged in its docstring with the measured reason
JAX_ONLY_CLASSES = {"Linear"}


def test_model_files_define_the_same_classes_methods_and_attributes():
    torch_classes = _classes(REPO / "backends/torch/model.py")
    jax_classes = _classes(REPO / "backends/jax/model.py")
    assert [c for c, _, _ in torch_classes] == [c for c, _, _ in jax_classes] == \
        ["CausalSelfAttention", "MLP", "Block", "GPT"]
    for (name, t_methods, t_attrs), (_, j_methods, j_attrs) in zip(torch_classes, jax_classes):
        expected = [METHOD_NAMES.get(m, m) for m in t_methods if (name, m) not in TORCH_ONLY_METHODS]
        assert j_methods == expected, name
        expected_attrs = [a for a in t_attrs if (name, a) not in TORCH_ONLY_ATTRIBUTES]
        assert j_attrs == expected_attrs, name  # same names, same order


def test_differences_are_tagged():
    jax_src = (REPO / "backends/jax/model.py").read_text(encoding="utf-8")
    torch_src = (REPO / "backends/torch/model.py").read_text(encoding="utf-8")
    tagged = [line for line in jax_src.splitlines() if TAG in line and line.strip().startswith("#")]
    from backends.jax import model as jax_model

    assert all(TAG in getattr(jax_model, cls).__doc__ for cls in JAX_ONLY_CLASSES)
    for topic in ("(in, out)", "rngs", "mask", "attend", "_init_weights", "epsilon", "dot_product_attention"):
        assert any(topic in line for line in tagged), topic
    assert TAG in torch_src
    train_src = "\n".join((REPO / f"backends/jax/{name}.py").read_text(encoding="utf-8") for name in ("train", "layout", "sampling", "device"))
    for topic in ("jit", "functional gradients", "explicit key", "(in, out)"):
        assert any(topic in line for line in train_src.splitlines() if TAG in line), topic


def test_model_forward_uses_the_same_local_names():
    def local_names(path, method):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {}
        for cls in tree.body:
            if isinstance(cls, ast.ClassDef):
                fn = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == method)
                names[cls.name] = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        return names

    t = local_names(REPO / "backends/torch/model.py", "forward")
    j = local_names(REPO / "backends/jax/model.py", "__call__")
    for cls in JAX_ONLY_CLASSES:
        j.pop(cls)
    for cls in t:
        assert t[cls] <= j[cls], (cls, t[cls] - j[cls])
    assert {"B", "T", "C"} <= j["CausalSelfAttention"] and {"B", "T"} <= j["GPT"]


def _signature(fn, drop_self=False):
    params = list(inspect.signature(fn).parameters.values())
    return [(p.name, p.kind, p.default) for p in params[1 if drop_self else 0:]]


def _public_functions(module):
    return [name for name, obj in vars(module).items()
            if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__]


def test_both_backends_satisfy_the_contract_with_its_signatures():
    """backends/interface.py is the contract: every function of the Backend protocol and every
    method of the Trainer protocol exists in both backends with exactly the protocol's signature."""
    pytest.importorskip("torch")
    from backends.interface import Backend, Trainer
    from backends.jax import train as jt
    from backends.torch import train as tt

    protocol_functions = [n for n, f in vars(Backend).items() if inspect.isfunction(f) and not n.startswith("_")]
    assert {"select_device", "resolve_dtype", "process_settings", "create_model", "export_weights",
            "load_weights"} <= set(protocol_functions)
    trainer_methods = {n: f for n, f in vars(Trainer).items()
                       if (inspect.isfunction(f) and (not n.startswith("_") or n == "__init__"))
                       or isinstance(f, property)}
    for module in (tt, jt):
        assert isinstance(module, Backend), module.__name__
        for name in protocol_functions:
            assert _signature(getattr(module, name)) == _signature(getattr(Backend, name), drop_self=True), name
        for name, member in trainer_methods.items():
            got = getattr(module.Trainer, name)
            if isinstance(member, property):
                assert isinstance(got, property), name
                continue
            assert _signature(got) == _signature(member), (module.__name__, name)
        assert set(module.DTYPES) == {"float32", "bfloat16", "float64"}
    assert tt.BACKEND == "torch" and jt.BACKEND == "jax"


def test_train_modules_define_the_same_functions_in_the_same_order():
    """Read side by side, the two train.py files list the same public functions in the same order;
    a JAX-only one (``adamw``, the optax transformation torch has no counterpart of) is tagged."""
    pytest.importorskip("torch")
    from backends.jax import train as jt
    from backends.torch import train as tt

    torch_names, jax_names = _public_functions(tt), _public_functions(jt)
    jax_only = [n for n in jax_names if n not in torch_names]
    assert [n for n in jax_names if n in torch_names] == torch_names
    assert jax_only == ["adamw"]
    assert "optax.adamw" in inspect.getsource(jt.adamw) and TAG in jt.adamw.__doc__
