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


EXPECTED = {
    "sample": ("flows/build_pianoyt.py:build_pianoyt", "build-pianoyt"),
    "pianoyt": ("flows/build_pianoyt.py:build_pianoyt", "build-pianoyt"),
    "violin-sample": ("flows/build_violinyt.py:build_violinyt", "build-violinyt"),
    "urmp": ("flows/build_violinyt.py:build_violinyt", "build-violinyt"),
    "faces-sample": ("flows/build_voxceleb.py:build_voxceleb", "build-voxceleb"),
    "voxceleb1": ("flows/build_voxceleb.py:build_voxceleb", "build-voxceleb"),
}


def test_prefect_yaml_defines_the_build_deployments():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]
                   if not d["entrypoint"].startswith("flows/regenerate.py")}  # (regenerate-benchmarks/sample)
    assert set(EXPECTED) <= set(deployments)
    for name, (entrypoint, flow_name) in EXPECTED.items():
        d = deployments[name]
        assert d["entrypoint"] == entrypoint
        flow = load_entrypoint(d["entrypoint"])
        assert flow.name == flow_name
        # The deployment's parameters are ones the flow takes, and Prefect validates them into its settings.
        assert set(d["parameters"]) == {"settings"}
        assert flow.validate_parameters(d["parameters"])["settings"].data_root
        assert d["work_pool"]["name"] == "sightsound-cpu"



def test_train_onsets_frames_deployment_runs_on_the_gpu_pool():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}["train-onsets-frames"]
    flow = load_entrypoint(d["entrypoint"])
    assert flow.name == "train-onsets-frames"
    assert set(d["parameters"]) == {"settings", "gpu_limit"}
    assert flow.validate_parameters(d["parameters"])["settings"].device == "cuda"
    assert d["work_pool"]["name"] == "sightsound-gpu"


def test_piano_onsets_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-piano-onsets"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-piano-onsets" and gpu["work_pool"]["name"] == "sightsound-gpu"
    assert params["settings"].config == "paper" and params["strict_gpu_limit"] is True
    assert params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-piano-onsets-sample"]
    assert cpu["work_pool"]["name"] == "sightsound-cpu"
    assert load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])["settings"].config == "small"
    ev = d["evaluate-piano-onsets"]
    assert load_entrypoint(ev["entrypoint"]).validate_parameters(ev["parameters"])["settings"].checkpoint


def test_violin_pitch_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-violin-pitch"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-violin-pitch" and gpu["work_pool"]["name"] == "sightsound-gpu"
    assert params["settings"].config == "paper" and params["settings"].stage == "all"
    assert params["strict_gpu_limit"] is True and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-violin-pitch-sample"]
    assert cpu["work_pool"]["name"] == "sightsound-cpu"
    assert load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])["settings"].config == "small"
    ev = d["evaluate-violin-pitch"]
    settings = load_entrypoint(ev["entrypoint"]).validate_parameters(ev["parameters"])["settings"]
    assert len(settings.checkpoint) == 4


def test_fabnet_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-fabnet"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-fabnet" and gpu["work_pool"]["name"] == "sightsound-gpu"
    assert params["settings"].config == "paper" and params["settings"].every_variant
    assert params["strict_gpu_limit"] is True and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-fabnet-sample"]
    assert cpu["work_pool"]["name"] == "sightsound-cpu"
    assert load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])["settings"].config == "small"


def test_x2face_and_face_evaluation_deployments_validate():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-x2face"]
    params = load_entrypoint(gpu["entrypoint"]).validate_parameters(gpu["parameters"])
    assert params["settings"].config == "paper" and params["settings"].stage == "I"
    assert gpu["work_pool"]["name"] == "sightsound-gpu" and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-x2face-sample"]
    assert load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])["settings"].config == "small"
    ev = d["evaluate-faces-sample"]
    settings = load_entrypoint(ev["entrypoint"]).validate_parameters(ev["parameters"])["settings"]
    assert len(settings.checkpoint) == 3 and len(settings.x2face_checkpoint) == 1


def test_av_sync_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-av-sync"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-av-sync" and params["settings"].config == "paper"
    assert gpu["work_pool"]["name"] == "sightsound-gpu" and params["settings"].trainer.accelerator == "cuda"
    assert params["strict_gpu_limit"] is True
    cpu = d["train-av-sync-sample"]
    params = load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])
    assert params["settings"].config == "small" and cpu["work_pool"]["name"] == "sightsound-cpu"
    ev = d["evaluate-av-sync"]
    flow = load_entrypoint(ev["entrypoint"])
    assert flow.name == "evaluate-av-sync" and len(flow.validate_parameters(ev["parameters"])["settings"].checkpoint) == 1


def test_av_mlp_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-av-mlp"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-av-mlp" and params["settings"].snr == 1.0 and params["strict_gpu_limit"] is True
    assert gpu["work_pool"]["name"] == "sightsound-gpu" and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-av-mlp-sample"]
    params = load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])
    assert params["settings"].trainer.max_minutes == 10 and cpu["work_pool"]["name"] == "sightsound-cpu"
    ev = d["evaluate-av-mlp"]
    flow = load_entrypoint(ev["entrypoint"])
    assert flow.name == "evaluate-av-mlp" and len(flow.validate_parameters(ev["parameters"])["settings"].checkpoint) == 1


def test_keypoint_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-keypoints"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-keypoints" and params["settings"].config == "paper" and params["strict_gpu_limit"]
    assert gpu["work_pool"]["name"] == "sightsound-gpu" and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-keypoints-sample"]
    params = load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])
    assert params["settings"].config == "small" and cpu["work_pool"]["name"] == "sightsound-cpu"


def test_class_embedding_deployments_validate_into_their_settings():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {d["name"]: d for d in config["deployments"]}
    gpu = d["train-class-embedding"]
    flow = load_entrypoint(gpu["entrypoint"])
    params = flow.validate_parameters(gpu["parameters"])
    assert flow.name == "train-class-embedding" and params["settings"].config == "paper" and params["strict_gpu_limit"]
    assert gpu["work_pool"]["name"] == "sightsound-gpu" and params["settings"].trainer.accelerator == "cuda"
    cpu = d["train-class-embedding-sample"]
    params = load_entrypoint(cpu["entrypoint"]).validate_parameters(cpu["parameters"])
    assert params["settings"].config == "small" and cpu["work_pool"]["name"] == "sightsound-cpu"


def test_regenerate_deployments_validate_and_the_retraining_schedule_starts_off():
    config = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    d = {(x["entrypoint"], x["name"]): x for x in config["deployments"]}
    sample = d[("flows/regenerate.py:regenerate_benchmarks", "sample")]
    flow = load_entrypoint(sample["entrypoint"])
    assert flow.name == "regenerate-benchmarks"
    assert flow.validate_parameters(sample["parameters"])["profile"] == "sample"
    assert sample["work_pool"]["name"] == "sightsound-cpu" and sample["concurrency_limit"] == 1
    weekly = d[("flows/regenerate.py:regenerate_benchmarks", "retrain-weekly")]
    assert weekly["work_pool"]["name"] == "sightsound-gpu" and weekly["concurrency_limit"] == 1
    (schedule,) = weekly["schedules"]
    assert schedule["active"] is False and schedule["cron"] == "0 3 * * 1"
    assert flow.validate_parameters(weekly["parameters"])["seed"] == 0
    paper = d[("flows/regenerate.py:regenerate_benchmarks", "paper")]
    params = flow.validate_parameters(paper["parameters"])
    assert params["profile"] == "paper" and params["dispatch"] == "deployments"  # trainings on the GPU pool
    assert paper["work_pool"]["name"] == "sightsound-cpu" and paper["concurrency_limit"] == 1
