"""``studio eval text-to-3d``: the prompt-file parser, the classifier and image-text scoring of
turntable views of a result, and the command (its ns-train run replaced by a known coloured ball of
Gaussians)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.io import StudioInputError
from studio.io.headers import check_prompt_file


def _prompts(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "prompts.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _ball(rgb: tuple[float, float, float], n: int = 3000):
    """A solid ball of radius 0.5 at the origin filled with ``n`` small opaque Gaussians of colour ``rgb``."""
    from studio.gaussians import Gaussians
    from studio.gaussians.sh import rgb_to_sh

    gen = torch.Generator().manual_seed(0)
    d = torch.randn(n, 3, generator=gen)
    means = d / d.norm(dim=1, keepdim=True) * 0.5 * torch.rand(n, 1, generator=gen) ** (1 / 3)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4)
    sh = rgb_to_sh(torch.tensor(rgb).expand(n, 3))[:, None]
    return Gaussians(means, quats, torch.full((n, 3), 0.04), torch.full((n,), 0.9), sh)


def test_prompt_file_captions_skip_blank_lines_and_comments(tmp_path):
    path = _prompts(tmp_path, "# validation\na matte blue cone\n\n  a glossy red torus  \n   # held out\n")
    assert check_prompt_file(path) == ["a matte blue cone", "a glossy red torus"]


@pytest.mark.parametrize(
    "text,message",
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\xff\xfe\x00garbage\x80\x81", "not UTF-8"),
        ("# only\n\n   # comments\n", "holds no caption"),
        ("a red ball\na blue\x07 box\n", "line 2"),
        ("".join(f"a red ball {k}\n" for k in range(101)), "101 captions"),
    ],
    ids=["missing", "empty", "binary", "only comments", "control characters", "101 captions"],
)
def test_prompt_file_refusals(tmp_path, text, message):
    path = tmp_path / "missing.txt" if text is None else _prompts(tmp_path, text)
    with pytest.raises(StudioInputError, match=message):
        check_prompt_file(path)


def test_turntable_views_of_a_red_ball_score_as_the_caption_says():
    from studio.eval.classifier import load_attribute_classifier
    from studio.eval.text_to_3d import caption_views, score_caption

    torch.set_num_threads(1)
    frames = caption_views(_ball((0.8, 0.1, 0.1)), views=4, size=48)
    assert frames.shape == (4, 48, 48, 3) and frames.dtype == np.uint8
    assert (frames[:, 0, 0] == 255).all()  # white background
    classifier = load_attribute_classifier()
    row = score_caption(classifier, frames, "a matte red sphere")
    assert row["n"] == 4 and row["category"] == 1.0 and row["colour"] == 1.0
    assert score_caption(classifier, frames, "a blue sphere")["colour"] == 0.0
    snowman = score_caption(classifier, frames, "a red snowman")
    assert snowman["category"] is None and snowman["material"] is None and snowman["colour"] == 1.0


def _random_clip(tmp: Path) -> Path:
    """A randomly initialised toy-clip file (the ``--clip`` model of the command test)."""
    from studio.rewards.contrastive import ToyCLIP, save_toy_clip

    torch.manual_seed(0)
    return save_toy_clip(ToyCLIP(), tmp / "clip.safetensors")


def test_embedding_scores_of_the_embedded_toy_clip():
    """toy-clip aligns a red ball's views with "a matte red sphere" better than with a blue torus;
    a ball looks alike from every side (consistency ~1), a ball and a box in turn do not."""
    from studio.eval.text_to_3d import IMAGE_TEXT_MODEL, caption_views, embedding_scores
    from studio.rewards import load_image_text_model

    torch.set_num_threads(1)
    model = load_image_text_model(IMAGE_TEXT_MODEL)
    red = caption_views(_ball((0.8, 0.1, 0.1)), views=4, size=32)
    blue = caption_views(_ball((0.1, 0.2, 0.8)), views=4, size=32)
    right, wrong = embedding_scores(model, red, "a matte red sphere"), embedding_scores(model, red, "a blue torus")
    assert right["alignment"] > wrong["alignment"] and right["consistency"] == wrong["consistency"] > 0.99
    mixed = embedding_scores(model, np.stack([red[0], blue[1], red[2], blue[3]]), "a matte red sphere")
    assert mixed["consistency"] < right["consistency"] - 0.05
    assert embedding_scores(model, red[:1], "a matte red sphere")["consistency"] is None


def test_command_writes_metrics_and_sheet(tmp_path, monkeypatch):
    import studio.export.runs
    from studio.cli.eval import TextTo3D
    from studio.cli.main import entrypoint

    torch.set_num_threads(1)
    colours = {"a matte red sphere": (0.8, 0.1, 0.1), "a blue snowman": (0.1, 0.2, 0.8)}
    generated = []

    def generate(self, caption: str, work: Path) -> Path:
        generated.append((caption, work))
        return work / caption.replace(" ", "_") / "config.yml"

    monkeypatch.setattr(TextTo3D, "generate", generate)
    monkeypatch.setattr(
        studio.export.runs,
        "load_gaussians_from_config",
        lambda path: _ball(colours[path.parent.name.replace("_", " ")]),
    )
    prompts = _prompts(tmp_path, "\n".join(colours))
    out = tmp_path / "res" / "metrics.json"
    clip = _random_clip(tmp_path)
    argv = ["--prompts", str(prompts), "--output", str(out), "--views", "3", "--size", "32", "--clip", str(clip)]
    entrypoint(["eval", "text-to-3d", *argv])
    metrics = json.loads(out.read_text())
    assert [c for c, _ in generated] == list(colours)
    assert generated[0][1] == tmp_path / "res" / "metrics_runs" / "000"
    red, snow = (metrics["captions"][c] for c in colours)
    assert (red["n"], red["category"], red["colour"]) == (3, 1.0, 1.0)
    assert snow["category"] is None and snow["colour"] == 1.0
    overall = metrics["overall"]
    assert (overall["captions"], overall["n"], overall["category"], overall["colour"]) == (2, 6, 1.0, 1.0)
    assert metrics["settings"]["method"] == "sds" and metrics["settings"]["alignment_clip_model"] == str(clip)
    for name in ("alignment", "consistency", "alignment_clip", "consistency_clip"):  # a ball: every view alike
        assert all(-1.0 <= metrics["captions"][c][name] <= 1.0 for c in colours), name
        assert overall[name] == pytest.approx(np.mean([metrics["captions"][c][name] for c in colours]))
    assert red["consistency"] > 0.99 and snow["consistency_clip"] > 0.99
    sheet = np.asarray(Image.open(tmp_path / "res" / "metrics_sheet.png"))
    assert sheet.shape == (2 * 32, 3 * 32, 3)


def test_command_refuses_bad_inputs_and_a_failed_run(tmp_path, monkeypatch, capsys):
    from studio.cli.main import entrypoint

    prompts = _prompts(tmp_path, "a glossy red torus\n")
    out = tmp_path / "metrics.json"
    head = ["eval", "text-to-3d", "--output", str(out)]
    for argv, flag in [
        (["--prompts", str(tmp_path / "none.txt")], "--prompts"),
        (["--prompts", str(prompts), "--method", "dreamcraft3d"], "--method"),
        (["--prompts", str(prompts), "--sheet", str(tmp_path / "sheet.jpg")], "--sheet"),
    ]:
        with pytest.raises(SystemExit) as stop:
            entrypoint(head + argv)
        assert stop.value.code == 2 and flag in capsys.readouterr().err
    monkeypatch.setattr(subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit) as stop:
        entrypoint(head + ["--prompts", str(prompts)])
    assert stop.value.code == 2 and "'a glossy red torus' failed" in capsys.readouterr().err
    assert not out.exists()
