"""The deployment file loads and its entry points are the project's flows."""

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_entrypoint(entrypoint: str):
    path, func = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location("entry_" + Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, func)


def test_prefect_yaml_defines_build_pianoyt():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert {"sample", "pianoyt"} <= set(deployments)
    for d in deployments.values():
        assert d["entrypoint"] == "flows/build_pianoyt.py:build_pianoyt"
        flow = load_entrypoint(d["entrypoint"])
        assert flow.name == "build-pianoyt"
        # Every parameter the deployment sets is one the flow takes.
        assert set(d["parameters"]) <= set(flow.parameters.properties)
        assert d["work_pool"]["name"] == "sightsound-cpu"

