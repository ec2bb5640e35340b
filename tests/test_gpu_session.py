"""The GPU session's helpers that run anywhere: the summary table and the script's syntax."""
import shutil
import subprocess

from benchmarks.gpu_summary import summary

GPU = {"date": "d", "device": "cuda", "command": "c", "machine": {},
       "nets": {"A": {"train_128": {"minidl_img_s": 9000.0, "torch_img_s": 20000.0, "ratio": 0.45},
                      "train_1024": {"minidl_img_s": 40000.0, "torch_img_s": 45000.0, "ratio": 0.889},
                      "infer_256": {"minidl_img_s": 1.0}},
                "D": {"train_128": {"minidl_img_s": 5000.0, "torch_img_s": 9000.0, "ratio": 0.556}}}}
CPU = {"machine": {"cpu": "x", "cpus": 16}, "command": "c", "nets": {"A": {"train_128": {"minidl_img_s": 400.0}}}}


def test_summary_checks_each_target():
    rows = {}
    for line in summary(GPU, CPU).splitlines():  # the first table (minidl vs PyTorch) comes first
        if line.startswith(("| A", "| D")):
            rows.setdefault(line.split("|")[1].strip() + line.split("|")[2].strip(), line)
    assert rows["Atrain b128"].rstrip().endswith("| NO |")          # 0.45 < 0.5
    assert rows["Atrain b1024"].rstrip().endswith("| yes |")        # 0.889 >= 0.8
    assert rows["Dtrain b128"].rstrip().endswith("| yes |")         # 0.556 >= 0.5
    assert rows["Ainfer b256"].rstrip().endswith("| - |")           # no target for inference
    gpu_cpu = [line for line in summary(GPU, CPU).splitlines() if "| 22.5 |" in line]
    assert gpu_cpu and gpu_cpu[0].rstrip().endswith("| yes |")      # 9000 / 400 = 22.5 >= 20


def test_session_script_parses():
    bash = shutil.which("bash")
    r = subprocess.run([bash, "-n", "benchmarks/gpu_session.sh"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
