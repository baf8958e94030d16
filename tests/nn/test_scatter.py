"""``materialize``: a layout hint that changes no value or derivative."""

import torch

from gnnpot.nn import materialize


def test_materialize_is_a_contiguous_copy():
    x = torch.randn(5, 7, dtype=torch.float64).t()  # transposed: not contiguous
    y = materialize(x)
    assert y.is_contiguous() and torch.equal(y, x)
    assert y.data_ptr() != x.data_ptr()


def test_materialize_has_the_derivatives_of_the_identity():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: materialize(t.sin()) ** 2, (x,))
    torch.autograd.gradgradcheck(lambda t: materialize(t.sin()) ** 2, (x,))


def test_materialize_traces_with_symbolic_sizes():
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(lambda t: materialize(t * 2).sum(0), tracing_mode="symbolic")(torch.randn(6, 3))
    assert any(node.target is torch.ops.gnnpot.materialize.default for node in graph.graph.nodes)
    x = torch.randn(9, 3)
    assert torch.allclose(graph(x), (x * 2).sum(0))
