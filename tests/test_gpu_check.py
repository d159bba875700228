"""benchmarks/gpu_check.py runs its tiny version on CPU, so the GPU check cannot rot between GPU days."""

import json
import math

from tests.test_experiment import load_script


def test_gpu_check_tiny_on_cpu(tmp_path):
    script = load_script("gpu_check", "benchmarks")
    out = tmp_path / "check.json"
    assert script.main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["batch_size"] == 64 and result["preset"] == "cpu"
    for precision in ("fp32", "bf16"):
        assert result[precision]["median_ms"] > 0 and math.isfinite(result[precision]["first_loss"])
    # Same weights, batch, masks and noise: bf16 autocast changes the first loss by rounding only.
    assert 0.95 < result["bf16_vs_fp32_first_loss"] < 1.05
    assert result["no_host_sync"] == "n/a (CPU)" and result["ddp"] == "skipped (--tiny)"
    assert result["fit"]["epochs"] == 1 and math.isfinite(result["fit"]["val_loss"])
