"""algos/ is pure: it imports with Ray, vLLM and DeepSpeed absent."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'ray', 'vllm', 'deepspeed'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import algos.textrank, algos.isodata, algos.noise, algos.pairs
import pkgutil, importlib, algos
for module in pkgutil.iter_modules(algos.__path__):
    importlib.import_module('algos.' + module.name)
assert not {'ray', 'vllm', 'deepspeed'} & set(sys.modules)
print('ok')
"""


def test_algos_import_without_ray_vllm_deepspeed():
    result = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
