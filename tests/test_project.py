"""The project's promises about itself: the README quickstart and CI stay in step."""
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
