"""`sprint report` on the command line: run folders and the paper's released trajectory folders."""

import json

from sprint.cli import main


def _run(folder, method, tokens):
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"task": {"task": "toy"}, "method": method}))
    (folder / "results.jsonl").write_text("".join(
        json.dumps({"id": str(i), "answer": "1", "correct": i % 2 == 0, "sequential_tokens": tokens * (i + 1),
                    "total_tokens": 2 * tokens * (i + 1), "wall_clock_s": 1.0}) + "\n" for i in range(6)))
    return folder


def test_report_command_on_run_folders(tmp_path, capsys):
    seq = _run(tmp_path / "seq", "sequential", 100)
    spr = _run(tmp_path / "spr", "sprint", 40)
    rc = main(["report", str(seq), str(spr), "--out", str(tmp_path / "out"), "--label", f"SPRINT={spr}",
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| toy | SPRINT | sprint | 6 | 50.0% [18.8, 81.2] | 0 | 140 |" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reduction"][0]["reduction"] == 0.6
    assert (tmp_path / "out" / "sequential_token_reduction.png").exists()


def test_report_command_on_released_outputs(shared_dir, tiny_tokenizer_dir, tmp_path, capsys):
    ref = shared_dir / "fixtures" / "sprint_reference"
    rc = main(["report", str(ref / "math500_sprint"), str(ref / "math500_rft"), "--gold",
               str(shared_dir / "data" / "math500.jsonl"), "--tokenizer", str(tiny_tokenizer_dir), "--out",
               str(tmp_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| math500 | math500_sprint | sprint | 100 | 92.0% [85.0, 95.9] | 0 |" in out
    assert "| math500 | math500_rft | sequential | 50 | 76.0% [62.6, 85.7] | 7 |" in out


def test_report_command_rejects_a_trajectory_folder_without_tokenizer(shared_dir, tmp_path, capsys):
    rc = main(["report", str(shared_dir / "fixtures" / "sprint_reference" / "math500_rft"), "--out", str(tmp_path)])
    assert rc == 2
    assert "--tokenizer is needed" in capsys.readouterr().err
