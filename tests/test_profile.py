import pytest

from embedlessons.profile import CPU, get_profile


def test_profiles(monkeypatch):
    monkeypatch.setenv("EMBEDLESSONS_PROFILE", "cpu")
    assert get_profile() is CPU
    assert "relevant docs + 1000" in CPU.describe()
    with pytest.raises(ValueError, match="unknown scale profile 'huge'"):
        get_profile("huge")


def test_gpu_profile_needs_cuda(monkeypatch):
    import torch

    if torch.cuda.is_available():
        assert get_profile("gpu").device == "cuda"
    else:
        with pytest.raises(RuntimeError, match="needs CUDA"):
            get_profile("gpu")
        monkeypatch.setenv("EMBEDLESSONS_PROFILE", "auto")
        assert get_profile() is CPU


def test_full_size_cells_say_what_they_would_do_without_cuda(monkeypatch, capsys):
    from embedlessons import profile

    monkeypatch.setattr(profile, "cuda_available", lambda: False)
    assert profile.full_size_here("train 1,000 steps") is False
    assert "On a GPU it would train 1,000 steps." in capsys.readouterr().out
    monkeypatch.setattr(profile, "cuda_available", lambda: True)
    assert profile.full_size_here("train 1,000 steps") is True
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="say what"):
        profile.full_size_here(" ")
