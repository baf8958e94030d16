"""``ChannelwiseTensorProduct``: e3nn's "uvu" tensor product, computed by fused products instead of einsums."""

import pytest
import torch
from e3nn import o3

from gnnpot.nn.irreps import ChannelwiseTensorProduct, refresh_wigner_3j, uvu_convolution

CASES = [
    ("4x0e+4x1o", 3, "0e+1o+2e+3o"),  # MACE small: hidden l <= 1, harmonics to 3
    ("3x0e+3x0o+3x1o+3x1e+3x2e+3x2o", 2, "0e+0o+1o+1e+2e+2o+3o"),  # NequIP with both parities
    ("5x0e", 1, "0e+1o"),  # a first layer: scalars only
    ("2x0e+2x3o+2x3e", 3, "0e+1o+2e+3o+3e"),  # NequIP paper's l = 3 inputs (summed by one reduction)
]


def _e3nn(conv: ChannelwiseTensorProduct, *inputs: torch.Tensor) -> torch.Tensor:
    return o3.TensorProduct.forward(conv, *inputs)


@pytest.mark.parametrize(("irreps_in", "max_ell", "wanted"), CASES)
def test_equals_e3nn_with_derivatives_in_float64(irreps_in, max_ell, wanted):
    torch.manual_seed(0)
    conv = uvu_convolution(o3.Irreps(irreps_in), o3.Irreps.spherical_harmonics(max_ell), o3.Irreps(wanted)).double()
    refresh_wigner_3j(conv)  # the coefficients exact in float64, as the families keep them
    inputs = [
        torch.randn(11, dim, dtype=torch.float64, requires_grad=True)
        for dim in (conv.irreps_in1.dim, conv.irreps_in2.dim, conv.weight_numel)
    ]
    ours, theirs = conv(*inputs), _e3nn(conv, *inputs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    seed = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, inputs, seed), torch.autograd.grad(theirs, inputs, seed), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_no_edges_and_state_dict_of_e3nn():
    conv = uvu_convolution(o3.Irreps("2x0e+2x1o"), o3.Irreps.spherical_harmonics(2), o3.Irreps("0e+1o+2e"))
    empty = conv(torch.zeros(0, conv.irreps_in1.dim), torch.zeros(0, 9), torch.zeros(0, conv.weight_numel))
    assert empty.shape == (0, conv.irreps_out.dim)
    plain = o3.TensorProduct(
        conv.irreps_in1,
        conv.irreps_in2,
        conv.irreps_out,
        [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in conv.instructions],
        internal_weights=False,
        shared_weights=False,
    )
    assert conv.state_dict().keys() == plain.state_dict().keys()  # models saved before it load as they were


def test_rejects_paths_it_does_not_compute():
    with pytest.raises(ValueError, match="uvu"):
        ChannelwiseTensorProduct("2x0e", "2x0e", "2x0e", [(0, 0, 0, "uvw", True)], shared_weights=False)
