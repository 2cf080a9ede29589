"""The deploy files, linted without a cluster: hadolint on the Dockerfiles, Ray's cluster schema
on the `ray up` file, the Kubernetes schema (kubernetes-validate) on every pod template of the
KubeRay manifests plus the KubeRay fields they use, Ray Serve's schema on the Serve config, and
every entry point they name exists."""

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.33.0"

# The KubeRay (ray.io/v1) fields the manifests use, with the types KubeRay's CRDs give them.
# KubeRay publishes its CRDs only in its repository, so this schema is written from them
# (ray-operator/config/crd/bases) rather than shipped; pod templates are checked against
# the real Kubernetes schema below.
_GROUP = {"type": "object", "required": ["rayStartParams", "template"],
          "properties": {"rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
                         "template": {"type": "object"}}}
_WORKER_GROUP = {"type": "object", "required": ["groupName", "rayStartParams", "template"],
                 "properties": {**_GROUP["properties"], "groupName": {"type": "string"},
                                "replicas": {"type": "integer", "minimum": 0},
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 0}}}
_CLUSTER_SPEC = {"type": "object", "required": ["headGroupSpec"], "additionalProperties": False,
                 "properties": {"rayVersion": {"type": "string"}, "headGroupSpec": _GROUP,
                                "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP}}}
KUBERAY = {
    "RayJob": {"type": "object", "required": ["entrypoint", "rayClusterSpec"], "additionalProperties": False,
               "properties": {"entrypoint": {"type": "string"}, "rayClusterSpec": _CLUSTER_SPEC,
                              "shutdownAfterJobFinishes": {"type": "boolean"},
                              "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0}}},
    "RayService": {"type": "object", "required": ["serveConfigV2", "rayClusterConfig"], "additionalProperties": False,
                   "properties": {"serveConfigV2": {"type": "string"}, "rayClusterConfig": _CLUSTER_SPEC}},
}


def _pod_templates(spec: dict) -> list[dict]:
    cluster = spec.get("rayClusterSpec") or spec["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def _in_repo(path: str) -> Path:
    """A path inside the images (WORKDIR /app) as a path in this checkout."""
    return ROOT / Path(path).relative_to("/app") if path.startswith("/app/") else ROOT / path


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint_and_run_real_entry_points(dockerfile):
    result = subprocess.run([str(BIN / "hadolint"), dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / dockerfile).read_text()
    command = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    script, config = command[1], command[command.index("--config") + 1]
    assert (ROOT / script).is_file() and (ROOT / config).is_file()
    assert "make setup VLLM=" in text  # the image installs what the README's setup installs


def test_ray_up_file_matches_rays_cluster_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))  # raises jsonschema.ValidationError naming the field
    config["docker"]["imge"] = "typo"
    with pytest.raises(Exception, match="imge"):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("manifest", ["cluster/rayjob.yaml", "cluster/rayservice.yaml"])
def test_kuberay_manifests_validate(manifest):
    import jsonschema
    import kubernetes_validate

    document = yaml.safe_load((ROOT / manifest).read_text())
    assert document["apiVersion"] == "ray.io/v1" and document["metadata"]["name"]
    jsonschema.validate(document["spec"], KUBERAY[document["kind"]])
    for template in _pod_templates(document["spec"]):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
                        "template": template}
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)
    broken = {**pod_template, "template": {"spec": {"containers": [{"name": "x", "image": 3}]}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)

    if document["kind"] == "RayJob":
        words = shlex.split(document["spec"]["entrypoint"])
        assert words[0] == "python" and _in_repo(words[1]).is_file()
        assert _in_repo(words[words.index("--config") + 1]).is_file()
        from jobs.train import parse_args

        from configs.schema import load_config

        args = parse_args(words[2:])
        load_config(str(_in_repo(args.config)), args.overrides)  # the overrides are valid keys
    else:
        from ray.serve.schema import ServeDeploySchema

        serve_config = yaml.safe_load(document["spec"]["serveConfigV2"])
        ServeDeploySchema.model_validate(serve_config)  # Ray Serve's own schema of a Serve config
        [app] = serve_config["applications"]
        module, _, function = app["import_path"].partition(":")
        assert callable(getattr(importlib.import_module(module), function))
        from configs.schema import load_config

        load_config(app["args"]["config"], app["args"]["overrides"])
