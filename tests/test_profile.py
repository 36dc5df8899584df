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
