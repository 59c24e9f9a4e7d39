"""The top-level tokenizers/ folder must never shadow Hugging Face's `tokenizers`."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_tokenizers_folder_is_not_a_regular_package():
    assert os.path.isdir(os.path.join(ROOT, "tokenizers"))
    assert not os.path.exists(os.path.join(ROOT, "tokenizers", "__init__.py"))


def test_hugging_face_tokenizers_wins_even_from_the_repo_root():
    code = ("import tokenizers, vp_tokenizers; "
            "print(tokenizers.Tokenizer.__module__, '|', list(vp_tokenizers.__path__)[0])")
    for cwd in (ROOT, "/"):
        out = _run(code, cwd)
        hf_module, ours = out.split(" | ")
        assert hf_module.startswith("tokenizers"), out
        assert os.path.realpath(ours) == os.path.realpath(os.path.join(ROOT, "tokenizers")), out


def test_our_tokenizers_import_under_their_own_name_from_anywhere():
    out = _run("import vp_tokenizers.magvit2, vp_tokenizers.soundstream; print('ok')", "/")
    assert out == "ok"
