"""Radial bases and cutoff envelopes."""

import math

import pytest
import torch

from gnnpot.nn import BesselRBF, CosineCutoff, GaussianRBF, PolynomialCutoff


@pytest.mark.parametrize("envelope", [CosineCutoff(4.0), PolynomialCutoff(4.0, p=6)])
def test_envelope_is_one_at_zero_and_flat_zero_at_cutoff(envelope):
    r = torch.tensor([0.0, 4.0 - 1e-7, 4.0, 5.0], dtype=torch.float64, requires_grad=True)
    value = envelope(r)
    (slope,) = torch.autograd.grad(value.sum(), r)
    assert float(value[0]) == pytest.approx(1.0)
    assert value[1:].abs().max() < 1e-12
    assert slope[1:].abs().max() < 1e-6


def test_polynomial_cutoff_is_twice_smooth():
    envelope = PolynomialCutoff(3.0, p=6)
    r = torch.tensor([3.0 - 1e-6], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(envelope(r).sum(), r, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), r)
    assert abs(float(curvature)) < 1e-4  # C2: the curvature vanishes linearly at the cutoff
    with pytest.raises(ValueError):
        PolynomialCutoff(3.0, p=1)


def test_gaussian_rbf_peaks_at_its_centres():
    rbf = GaussianRBF(num_rbf=5, cutoff=4.0)
    out = rbf(torch.tensor([0.0, 1.0, 4.0]))
    assert out.shape == (3, 5)
    assert torch.argmax(out, dim=1).tolist() == [0, 1, 4]


def test_bessel_rbf_matches_formula():
    rbf = BesselRBF(num_rbf=3, cutoff=5.0).double()
    r = torch.tensor([1.3], dtype=torch.float64)
    expected = [math.sqrt(2 / 5) * math.sin(n * math.pi * 1.3 / 5) / 1.3 for n in (1, 2, 3)]
    assert torch.allclose(rbf(r)[0], torch.tensor(expected, dtype=torch.float64))
    assert isinstance(BesselRBF(3, 5.0, trainable=True).freqs, torch.nn.Parameter)
