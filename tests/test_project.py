"""The project's promises about itself: the README quickstart and CI stay in step, and imports go the one way
README's Layout table says."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Quickstart\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a Quickstart bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_quickstart_has_exactly_two_commands():
    cmds = _quickstart()
    assert len(cmds) == 2, cmds
    assert "pytest" in cmds[1] and "experiments run" in cmds[0]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    assert _quickstart()[1] in ci



def test_readme_autograd_example_runs():
    text = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"## Autograd in one screen\s+```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(code, scope)
    assert scope["x"].grad.shape == (2, 2) and scope["w"].grad.shape == (2, 3)


def test_readme_results_table_is_the_generated_one():
    """README's Results table is results/RESULTS.md, which `python -m experiments results` writes."""
    table = open(os.path.join(ROOT, "results", "RESULTS.md")).read().strip()
    assert table in open(os.path.join(ROOT, "README.md")).read()


def _layers():
    """The package's layers in README's Layout order, as module-name prefixes ('minidl.backend', ...)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    table = re.search(r"## Layout.*?\n\|---\|---\|\n(.*?)\n\n", text, re.S).group(1)
    layers = []
    for row in table.splitlines():
        cell = row.split("|")[1]
        names = re.findall(r"`([^`]+)`", cell)
        if not names[0].startswith("minidl/"):
            continue
        folder = os.path.dirname(names[0])
        layers.append([(folder + "/" + n if "/" not in n else n).rstrip("/").removesuffix(".py").replace("/", ".")
                       for n in names])
    return layers


def test_imports_go_one_way_down_readmes_layout_table():
    layers = _layers()
    assert layers[0] == ["minidl.backend"] and ["minidl.kernels"] in layers and ["minidl.ops"] in layers

    def rank(module):
        for i, names in enumerate(layers):
            if any(module == n or module.startswith(n + ".") for n in names):
                return i
        raise AssertionError(f"{module} is in no row of README's Layout table")

    upward = []
    for folder, _, files in os.walk(os.path.join(ROOT, "minidl")):
        for f in files:
            path = os.path.join(folder, f)
            module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            if not f.endswith(".py") or module == "minidl":   # the package's front imports every layer
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module == "minidl":   # from minidl import ops
                    targets = ["minidl." + a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    targets = [node.module]
                else:
                    targets = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for target in targets:
                    if target.startswith("minidl.") and rank(target) > rank(module):
                        upward.append((module, target))
    assert upward == [("minidl.autograd", "minidl.ops")], upward

def _section(title):
    text = open(os.path.join(ROOT, "README.md")).read()
    return re.search(rf"^## {title}\n(.*?)(?=^## )", text, re.S | re.M).group(1)


def test_readme_data_section_tells_a_clone_how_to_get_each_dataset():
    """Every dataset's official source as the code fetches it, and the two ways to point at files put by hand;
    the workplace's ../shared only as a side note that says a clone lacks it."""
    from minidl.data import CIFAR10, CIFAR100, MNIST, FashionMNIST
    data = _section("Data")
    for url in MNIST.mirrors + FashionMNIST.mirrors + [CIFAR10.url, CIFAR100.url]:
        assert url in data, url
    for name in MNIST.resources + FashionMNIST.resources:
        assert name[0][:-3] in data
    for words in ("MINIDL_DATA", "--data-dir", "--no-download", "cifar-10-batches-py", "cifar-100-python"):
        assert words in data, words
    for paragraph in data.split("\n\n"):
        if "../shared" in paragraph:
            assert "a clone\nhas no `../shared`" in paragraph or "a clone has no `../shared`" in paragraph


def test_readme_says_what_the_results_wall_times_measure():
    results = _section("Results")
    assert "wall_time_s" in results and "not a speed figure" in results
