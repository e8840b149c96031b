"""ConvLSTM cell (no peepholes) against a hand computation of the spec's equations; FlowEncoder checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from videossl.errors import VideosslError
from videossl.models.convlstm import ConvLSTM, ConvLSTMCell, FlowEncoder


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_cell_matches_hand_computation_1x1():
    # one input channel, one hidden channel, 1x1 kernels: every gate is a scalar affine map
    cell = ConvLSTMCell(1, 1, kernel_size=1)
    wx = [0.5, -0.3, 0.8, 0.2]  # i, f, g, o
    bx = [0.1, 0.2, -0.1, 0.05]
    wh = [0.4, 0.6, -0.7, 0.9]
    with torch.no_grad():
        cell.x2h.weight.copy_(torch.tensor(wx).view(4, 1, 1, 1))
        cell.x2h.bias.copy_(torch.tensor(bx))
        cell.h2h.weight.copy_(torch.tensor(wh).view(4, 1, 1, 1))
    assert cell.h2h.bias is None  # hidden-to-gate convolutions carry no bias
    xs = [0.7, -1.2]
    h, c = 0.0, 0.0
    state = None
    for x in xs:
        i = sig(wx[0] * x + bx[0] + wh[0] * h)
        f = sig(wx[1] * x + bx[1] + wh[1] * h)
        g = math.tanh(wx[2] * x + bx[2] + wh[2] * h)
        o = sig(wx[3] * x + bx[3] + wh[3] * h)
        c = f * c + i * g
        h = o * math.tanh(c)
        ht, ct = cell(torch.full((1, 1, 2, 2), x), state)
        state = (ht, ct)
        assert torch.allclose(ht, torch.full_like(ht, h), atol=1e-6)
        assert torch.allclose(ct, torch.full_like(ct, c), atol=1e-6)


def test_cell_matches_equations_3x3_and_has_no_peepholes():
    torch.manual_seed(0)
    cin, ch = 2, 3
    cell = ConvLSTMCell(cin, ch, kernel_size=3, memory_kernel_size=3)
    x = torch.randn(1, cin, 5, 4)
    h0, c0 = torch.randn(1, ch, 5, 4), torch.randn(1, ch, 5, 4)
    Wx, b, Wh = cell.x2h.weight, cell.x2h.bias, cell.h2h.weight
    gates = []
    for k in range(4):  # W_x?∗x + b_? + W_h?∗h, one gate at a time
        sl = slice(k * ch, (k + 1) * ch)
        gates.append(F.conv2d(x, Wx[sl], b[sl], padding=1) + F.conv2d(h0, Wh[sl], padding=1))
    i, f, g, o = torch.sigmoid(gates[0]), torch.sigmoid(gates[1]), torch.tanh(gates[2]), torch.sigmoid(gates[3])
    c1 = f * c0 + i * g
    h1 = o * torch.tanh(c1)
    h, c = cell(x, (h0, c0))
    assert torch.allclose(h, h1, atol=1e-6) and torch.allclose(c, c1, atol=1e-6)
    # no peepholes: the gates do not see c, so c_t is affine in c_{t-1} with slope f (independent of c)
    _, c_a = cell(x, (h0, c0 + 1.0))
    assert torch.allclose(c_a - c, f, atol=1e-6)


def test_init_and_forget_bias():
    cell = ConvLSTMCell(4, 8, kernel_size=7, forget_bias=1.0)
    b = cell.x2h.bias.detach()
    assert torch.all(b[8:16] == 1.0) and torch.all(b[:8] == 0) and torch.all(b[16:] == 0)
    assert cell.x2h.weight.abs().max() <= 0.08 and cell.h2h.weight.abs().max() <= 0.08


def test_untied_first_step_has_no_forget_gate():
    torch.manual_seed(1)
    lstm = ConvLSTM(2, 3, kernel_size=3, untied_first=True)
    x = torch.randn(2, 2, 4, 4)
    h, c, _ = lstm.step(x, None)
    z = lstm.first[0].x2h(x)
    i, g, o = z.chunk(3, 1)
    c1 = torch.sigmoid(i) * torch.tanh(g)
    assert torch.allclose(c, c1, atol=1e-6) and torch.allclose(h, torch.sigmoid(o) * torch.tanh(c1), atol=1e-6)


def test_sequence_equals_steps():
    torch.manual_seed(2)
    lstm = ConvLSTM(2, 4, kernel_size=3, num_layers=2)
    seq = torch.randn(1, 5, 2, 6, 6)
    hs, cs, _ = lstm(seq)
    state = None
    for t in range(5):
        h, c, state = lstm.step(seq[:, t], state)
        assert torch.allclose(h, hs[:, t], atol=1e-6)


def test_encoder_features_and_errors():
    enc = FlowEncoder(preset="paper", in_channels=1)
    clip = torch.rand(2, 3, 4, 16, 16)  # RGB is converted to grey
    assert enc(clip).shape == (2, enc.feature_dim) == (2, 64)
    assert FlowEncoder(preset="paper", with_cell=True, pool="mean_t")(clip).shape == (2, 128)
    with pytest.raises(VideosslError, match="channel mismatch"):
        FlowEncoder(preset="paper", in_channels=3)(torch.rand(1, 1, 4, 16, 16))
    with pytest.raises(VideosslError, match="channel mismatch"):
        FlowEncoder(preset="paper", in_channels=1, rgb_to_grey=False)(clip)
    with pytest.raises(VideosslError, match="not divisible by the encoder stride 4"):
        FlowEncoder(preset="modern", in_channels=3)(torch.rand(1, 3, 4, 18, 16))
    with pytest.raises(VideosslError, match="too short for burn_in=2"):
        FlowEncoder(preset="paper", burn_in=2)(torch.rand(1, 1, 2, 16, 16))
    with pytest.raises(VideosslError, match="unknown flow encoder preset"):
        FlowEncoder(preset="nope")
