"""The `fms-llm tokenizer` command line: train, encode to a binary id file, errors, wiring."""

from __future__ import annotations

import argparse
import sys
from array import array
from pathlib import Path

import pytest

from fms_llm.tokenizer import BPETokenizer
from fms_llm.tokenizer.cli import main, register

TEXT = (
    "In the beginning God created the heaven and the earth.\n"
    "And the earth was without form, and void; and darkness was upon the face of the deep.\n"
    "Ἐν ἀρχῇ ἦν ὁ λόγος. 太初有道。 😀  \t\n\n"
) * 40


def _ids(path: Path, code: str) -> list[int]:
    data = array(code)
    data.frombytes(path.read_bytes())
    if sys.byteorder == "big":
        data.byteswap()
    return list(data)


def test_train_then_encode_writes_the_ids_of_encode(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT, encoding="utf-8")
    b.write_text(TEXT.upper(), encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    argv = ["train", "--input", str(a), str(b), "--vocab-size", "400", "--out", str(tok_path)]
    assert main([*argv, "--special-token", "<|endoftext|>", "--quiet"]) == 0
    tok = BPETokenizer.load(tok_path)
    assert tok.vocab_size == 400
    assert (
        tok.merges
        == BPETokenizer.train([TEXT, TEXT.upper()], 400, ["<|endoftext|>"], progress=False).merges
    )

    out = tmp_path / "ids.bin"
    argv = ["encode", "--tokenizer", str(tok_path), "--input", str(a), str(b), "--out", str(out)]
    assert main([*argv, "--separator", "<|endoftext|>", "--quiet"]) == 0
    eot = tok.special_tokens["<|endoftext|>"]
    assert _ids(out, "H") == [*tok.encode(TEXT), eot, *tok.encode(TEXT.upper()), eot]

    assert main([*argv[:-2], "--out", str(out), "--dtype", "uint32", "--quiet"]) == 0
    assert _ids(out, "I") == [*tok.encode(TEXT), *tok.encode(TEXT.upper())]


def test_cl100k_pattern_by_name(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text(TEXT, encoding="utf-8")
    argv = ["train", "--input", str(a), "--vocab-size", "300", "--out", str(tmp_path / "t.json")]
    assert main([*argv, "--pattern", "cl100k", "--quiet"]) == 0
    from fms_llm.tokenizer import CL100K_PATTERN

    assert BPETokenizer.load(tmp_path / "t.json").pattern == CL100K_PATTERN


def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.txt"
    a.write_text(TEXT, encoding="utf-8")
    argv = ["encode", "--tokenizer", str(tmp_path / "missing.json"), "--input", str(a)]
    assert main([*argv, "--out", str(tmp_path / "o.bin")]) == 2
    assert "cannot read tokenizer file" in capsys.readouterr().err
    argv = ["train", "--input", str(a), "--vocab-size", "100", "--out", str(tmp_path / "t.json")]
    assert main([*argv, "--quiet"]) == 2
    assert "vocab_size=100 is too small" in capsys.readouterr().err
    assert (
        main(["train", "--input", str(tmp_path / "nope.txt"), "--vocab-size", "300", "--out", "x"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_register_wires_into_a_parent_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="fms-llm")
    register(parser.add_subparsers(dest="command"))
    a = tmp_path / "a.txt"
    a.write_text(TEXT, encoding="utf-8")
    args = parser.parse_args(
        [
            "tokenizer",
            "train",
            "--input",
            str(a),
            "--vocab-size",
            "300",
            "--out",
            str(tmp_path / "t.json"),
        ]
    )
    assert args.func(args) == 0
    assert (tmp_path / "t.json").is_file()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["tokenizer", "encode", "--help"])
    assert exit_info.value.code == 0
    assert "little-endian token ids" in capsys.readouterr().out


def test_parallel_encode_of_a_large_file_equals_streaming(tmp_path: Path) -> None:
    """Chunks cut where pre-tokens end, encoded by 2 processes: the same id file, byte for byte."""
    a = tmp_path / "a.txt"
    text = (TEXT + "<|endoftext|>") * 30
    a.write_text(text, encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    argv = ["train", "--input", str(a), "--vocab-size", "400", "--out", str(tok_path)]
    assert main([*argv, "--special-token", "<|endoftext|>", "--quiet"]) == 0
    base = ["encode", "--tokenizer", str(tok_path), "--input", str(a), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "one.bin"), "--workers", "1"]) == 0
    argv = [*base, "--out", str(tmp_path / "two.bin"), "--workers", "2", "--chunk-bytes", "20000"]
    assert main(argv) == 0
    assert (tmp_path / "one.bin").read_bytes() == (tmp_path / "two.bin").read_bytes()
    assert _ids(tmp_path / "one.bin", "H") == BPETokenizer.load(tok_path).encode(
        text, allowed_special="all"
    )


def test_encode_rejects_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.txt"
    a.write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "train",
                "--input",
                str(a),
                "--vocab-size",
                "300",
                "--out",
                str(tmp_path / "t.json"),
                "--quiet",
            ]
        )
        == 0
    )
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("un caf\xe9 au lait\n".encode("latin-1") * 100)  # spaces: cuttable
    for workers in ("1", "2"):
        argv = ["encode", "--tokenizer", str(tmp_path / "t.json"), "--input", str(bad), "--quiet"]
        assert (
            main(
                [
                    *argv,
                    "--out",
                    str(tmp_path / "o.bin"),
                    "--workers",
                    workers,
                    "--chunk-bytes",
                    "64",
                ]
            )
            == 2
        )
        assert "latin1.txt' is not UTF-8" in capsys.readouterr().err
        assert not (tmp_path / "o.bin").exists()
        assert not list(tmp_path.glob(".o.bin*"))  # no temporary file left behind


@pytest.mark.parametrize("which", ["input", "tokenizer"])
def test_encode_refuses_an_out_that_is_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    """`--out` naming an input (here through another spelling of the path) is refused; the input stays."""
    a = tmp_path / "a.txt"
    a.write_text(TEXT, encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    assert (
        main(["train", "--input", str(a), "--vocab-size", "300", "--out", str(tok_path), "--quiet"])
        == 0
    )
    target = a if which == "input" else tok_path
    before = target.read_bytes()
    other_spelling = tmp_path / "." / target.name
    argv = ["encode", "--tokenizer", str(tok_path), "--input", str(a), "--out", str(other_spelling)]
    assert main([*argv, "--quiet"]) != 0
    assert "--out" in capsys.readouterr().err
    assert target.read_bytes() == before
