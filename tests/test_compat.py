"""The torchvision-free CompressAI import (``cotam_llava._compressai``) and import hygiene.

Each check runs in a fresh interpreter: which modules are already imported decides
what the shim does, so an in-process test would depend on test order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, extra_path: list[Path] | None = None, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter with the repo importable; it must print one JSON object last."""
    env = dict(os.environ)
    paths = [str(p) for p in (extra_path or [])] + [str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT), env=env,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_shim_makes_compressai_importable_without_torchvision():
    # sys.modules["torchvision"] = None makes torchvision unimportable (and invisible to
    # importlib.util.find_spec) even on machines where it is installed.
    result = run_python(
        """
        import json, sys
        sys.modules["torchvision"] = None
        import cotam_llava._compressai as shim
        import compressai
        from compressai.registry import TRANSFORMS, register_transform
        from compressai.models import Elic2022Official  # the model zoo imports fine

        @register_transform("CoTAMTestTransform")
        class T:
            pass

        print(json.dumps({
            "shimmed": shim.SHIMMED,
            "tv_available": shim.TORCHVISION_AVAILABLE,
            "same_module": shim.compressai is compressai,
            "transforms_is_dict": isinstance(TRANSFORMS, dict),
            "registered": TRANSFORMS.get("CoTAMTestTransform") is T,
            "pyg_entries": sorted(k for k in TRANSFORMS if k != "CoTAMTestTransform")[:3],
        }))
        """
    )
    assert result["shimmed"] is True
    assert result["tv_available"] is False
    assert result["same_module"] is True
    assert result["transforms_is_dict"] is True
    assert result["registered"] is True, "register_transform of the shim must fill TRANSFORMS like upstream"


def test_shim_not_installed_when_torchvision_is_importable(tmp_path: Path):
    fake = tmp_path / "fake_site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text("")
    (fake / "torchvision" / "transforms.py").write_text("class Resize:\n    pass\n")
    result = run_python(
        """
        import json, sys
        import cotam_llava._compressai as shim
        from compressai.registry import TRANSFORMS
        mod = sys.modules["compressai.registry.transforms"]
        print(json.dumps({
            "shimmed": shim.SHIMMED,
            "tv_available": shim.TORCHVISION_AVAILABLE,
            "has_resize": "Resize" in TRANSFORMS,
            "upstream_file": getattr(mod, "__file__", None),
        }))
        """,
        extra_path=[fake],
    )
    assert result["tv_available"] is True
    assert result["shimmed"] is False, "with torchvision importable the upstream registry must be used"
    assert result["has_resize"] is True, "upstream TRANSFORMS includes torchvision's transforms"
    assert result["upstream_file"] and result["upstream_file"].endswith("transforms.py")


_STATE_SNAPSHOT = """
def snapshot():
    import torch, warnings
    return {
        "filters": [repr(f) for f in warnings.filters],
        "default_dtype": str(torch.get_default_dtype()),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "grad_enabled": torch.is_grad_enabled(),
    }
"""


def test_import_cotam_llava_leaves_global_state_alone():
    result = run_python(
        _STATE_SNAPSHOT
        + """
import json, torch
before = snapshot()
import cotam_llava
after = snapshot()
print(json.dumps({"before": before, "after": after}))
"""
    )
    assert result["after"] == result["before"]


def test_import_codec_modules_leaves_global_state_alone():
    # compressai's own imports (torch_geometric -> requests/urllib3/sympy, scipy) register
    # warning filters at import time; that is not cotam_llava's doing. Every filter call is
    # therefore attributed to the module that made it: none may come from cotam_llava, and
    # every filter that appears must have come through a recorded call.
    result = run_python(
        _STATE_SNAPSHOT
        + """
import json, sys, warnings, torch
callers = []
def _recording(fn):
    def wrapper(*args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", "?"))
        return fn(*args, **kwargs)
    return wrapper
warnings.filterwarnings = _recording(warnings.filterwarnings)
warnings.simplefilter = _recording(warnings.simplefilter)
warnings.resetwarnings = _recording(warnings.resetwarnings)
before = snapshot()
import cotam_llava
import cotam_llava.errors, cotam_llava.imageio, cotam_llava._compressai
import cotam_llava.codec.configuration, cotam_llava.codec.gains, cotam_llava.codec.symbols
import cotam_llava.codec.quality_map, cotam_llava.codec.container, cotam_llava.codec.model
import cotam_llava.codec.pipeline, cotam_llava.codec.classical, cotam_llava.codec.registry
after = snapshot()
print(json.dumps({"before": before, "after": after, "callers": callers}))
"""
    )
    before, after, callers = result["before"], result["after"], result["callers"]
    ours = [c for c in callers if c == "cotam_llava" or c.startswith("cotam_llava.")]
    assert not ours, f"cotam_llava modules changed the warning filters: {ours}"
    added = [f for f in after["filters"] if f not in before["filters"]]
    assert len(added) <= len(callers), f"filters added without a warnings.* call: {added}"
    assert all(f in after["filters"] for f in before["filters"]), "pre-existing warning filters were removed"
    assert {k: v for k, v in after.items() if k != "filters"} == {k: v for k, v in before.items() if k != "filters"}


def test_package_exports_its_public_names_lazily():
    """``import cotam_llava`` stays light (no torch); every public name resolves on first use; a model name
    registers the Auto classes."""
    result = run_python(
        """
import json, sys
import cotam_llava
from cotam_llava.codec.container import parse  # what `cotam info` needs: no torch either
light = "torch" not in sys.modules and "transformers" not in sys.modules
names = {name: type(getattr(cotam_llava, name)).__name__ for name in cotam_llava.__all__}
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
print(json.dumps({"light": light, "names": names, "registered": "cotam_llava" in CONFIG_MAPPING,
                  "dir": sorted(set(cotam_llava.__all__) - set(dir(cotam_llava)))}))
"""
    )
    assert result["light"]
    assert result["names"]["CoTAMELIC"] == "type" and result["names"]["encode"] == "function"
    assert result["registered"] and result["dir"] == []
    import cotam_llava

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cotam_llava.nope  # noqa: B018


def test_an_unreachable_hub_fails_fast_with_our_error(monkeypatch, tmp_path):
    """A hub id that is not cached fails in seconds with a CheckpointError (transformers retries for ~30 s)."""
    import time

    from huggingface_hub import constants

    from cotam_llava._transformers import HUB_CHECK_SECONDS, require_hub
    from cotam_llava.codec.guidance import load_guidance
    from cotam_llava.errors import CheckpointError

    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # the local endpoints below must be reached directly
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    require_hub(tmp_path)  # a local folder passes
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not answer"):
        load_guidance("someone/not-cached-anywhere")
    assert time.perf_counter() - start < HUB_CHECK_SECONDS + 1.5
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - the http.server protocol
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(CheckpointError, match="has no model of that name"):
            require_hub("someone/not-on-the-hub")
    finally:
        server.shutdown()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        require_hub("someone/not-cached-anywhere")
    with pytest.raises(CheckpointError, match="neither a local folder nor a hub"):
        require_hub("not a/valid//id")
