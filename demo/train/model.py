"""TransMamba forward pass, written from ../shared/spec/MODEL.md alone (no runtime code).

Each layer mixes tokens with one T x T matrix per head: rows before the layer's TransPoint hold
causal softmax attention (Q = C, K = B, V = x); rows from it on hold the SSM written in its
quadratic ("SSD") form, whose row t covers every s <= t. The part s < TransPoint of an SSM row is
exactly what the memory converter hands to the recurrence, so this form trains the converter
without writing it out. T stays at the training length (256), where the matrices are cheap.
"""

import math
from dataclasses import dataclass, asdict
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_heads: int = 8
    head_dim: int = 64
    state_size: int = 64
    n_groups: int = 4
    conv_kernel: int = 4
    mlp_intermediate_size: int = 512
    layer_norm_epsilon: float = 1e-5
    transpoints: Optional[List[Optional[int]]] = None

    @property
    def inner(self):
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self):
        return self.inner + 2 * self.n_groups * self.state_size

    def to_json(self):
        """config.json in the spec's `transmamba` dialect."""
        d = asdict(self)
        d.update(
            model_type="transmamba",
            expand=self.inner // self.hidden_size,
            use_bias=False,
            use_conv_bias=True,
            tie_word_embeddings=True,
            time_step_limit=[0.0, {"__float__": "Infinity"}],
            attention_gate=False,
            rope_theta=None,
            attention_scale=1.0 / math.sqrt(self.state_size),
        )
        return d


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Mixer(nn.Module):
    def __init__(self, c: Config, layer: int):
        super().__init__()
        self.c = c
        H = c.num_heads
        self.in_proj = nn.Linear(c.hidden_size, c.inner + c.conv_dim + H, bias=False)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.conv_kernel, groups=c.conv_dim, bias=True)
        # Mamba2's initialisation: A in [1, 16], dt in [1e-3, 1e-1] log-uniformly.
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        dt = torch.exp(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.D = nn.Parameter(torch.ones(H))
        self.norm = nn.Parameter(torch.ones(c.inner))
        self.out_proj = nn.Linear(c.inner, c.hidden_size, bias=False)
        nn.init.normal_(self.out_proj.weight, std=0.02 / math.sqrt(2 * c.num_hidden_layers))

    def forward(self, u, transpoint: Optional[int]):
        c = self.c
        Bsz, T, _ = u.shape
        H, P, G, N = c.num_heads, c.head_dim, c.n_groups, c.state_size
        z, xBC, dt = torch.split(self.in_proj(u), [c.inner, c.conv_dim, H], dim=-1)
        xBC = F.silu(self.conv1d(F.pad(xBC.transpose(1, 2), (c.conv_kernel - 1, 0))).transpose(1, 2))
        x, Bm, Cm = torch.split(xBC, [c.inner, G * N, G * N], dim=-1)
        x = x.view(Bsz, T, H, P)
        Bm = Bm.view(Bsz, T, G, N)
        Cm = Cm.view(Bsz, T, G, N)
        dt = F.softplus(dt + self.dt_bias)  # [B,T,H]; time_step_limit is (0, inf)
        A = -torch.exp(self.A_log)
        tp = T if transpoint is None else min(transpoint, T)

        # ⟨C_t, B_s⟩ per group, shared by the H/G heads of the group.
        cb = torch.einsum("btgn,bsgn->bgts", Cm, Bm)
        cb = cb.repeat_interleave(H // G, dim=1)  # [B,H,T,T]
        causal = torch.ones(T, T, dtype=torch.bool, device=u.device).tril()
        rows = []
        if tp > 0:  # attention rows t < tp
            s = (cb[:, :, :tp, :] / math.sqrt(N)).masked_fill(~causal[:tp], float("-inf"))
            rows.append(torch.softmax(s, dim=-1))
        if tp < T:  # SSM rows t >= tp: C_t·B_s · exp(A Σ_{r=s+1..t} dt_r) · dt_s, s <= t
            cum = torch.cumsum(dt * A, dim=1).transpose(1, 2)  # [B,H,T]
            seg = cum[:, :, tp:, None] - cum[:, :, None, :]  # ≤ 0 where s <= t
            seg = seg.masked_fill(~causal[tp:], float("-inf"))
            rows.append(cb[:, :, tp:, :] * torch.exp(seg) * dt.transpose(1, 2)[:, :, None, :])
        mix = torch.cat(rows, dim=2)  # [B,H,T,T]
        y = torch.einsum("bhts,bshp->bthp", mix, x) + self.D[:, None] * x
        y = y.reshape(Bsz, T, c.inner)
        gate = F.silu(z)
        if tp > 0:  # attention_gate = false: the attention rows are not gated
            gate = torch.cat([torch.ones_like(gate[:, :tp]), gate[:, tp:]], dim=1)
        y = y * gate
        yg = y.view(Bsz, T, G, c.inner // G)
        y = (yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + c.layer_norm_epsilon)).view(Bsz, T, -1)
        return self.out_proj(y * self.norm)


class Layer(nn.Module):
    def __init__(self, c: Config, i: int):
        super().__init__()
        self.c = c
        self.norm = nn.Parameter(torch.ones(c.hidden_size))
        self.mixer = Mixer(c, i)
        M = c.mlp_intermediate_size
        self.norm2 = nn.Parameter(torch.ones(c.hidden_size))
        self.fc1 = nn.Linear(c.hidden_size, 2 * M, bias=False)
        self.fc2 = nn.Linear(M, c.hidden_size, bias=False)
        nn.init.normal_(self.fc2.weight, std=0.02 / math.sqrt(2 * c.num_hidden_layers))

    def forward(self, h, transpoint):
        eps = self.c.layer_norm_epsilon
        h = h + self.mixer(rms_norm(h, self.norm, eps), transpoint)
        v, g = self.fc1(rms_norm(h, self.norm2, eps)).chunk(2, dim=-1)
        return h + self.fc2(v * F.silu(g))


class TransMamba(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(c, i) for i in range(c.num_hidden_layers))
        self.norm_f = nn.Parameter(torch.ones(c.hidden_size))

    def forward(self, tokens, transpoints: List[Optional[int]]):
        h = self.embeddings(tokens)
        for layer, tp in zip(self.layers, transpoints):
            h = layer(h, tp)
        h = rms_norm(h, self.norm_f, self.c.layer_norm_epsilon)
        return h @ self.embeddings.weight.T  # tied

    def spec_tensors(self):
        """The weights under the spec's tensor names (transformers' layout)."""
        out = {"backbone.embeddings.weight": self.embeddings.weight, "backbone.norm_f.weight": self.norm_f}
        for i, l in enumerate(self.layers):
            p = f"backbone.layers.{i}."
            m = l.mixer
            out.update({
                p + "norm.weight": l.norm,
                p + "mixer.in_proj.weight": m.in_proj.weight,
                p + "mixer.conv1d.weight": m.conv1d.weight,
                p + "mixer.conv1d.bias": m.conv1d.bias,
                p + "mixer.dt_bias": m.dt_bias,
                p + "mixer.A_log": m.A_log,
                p + "mixer.D": m.D,
                p + "mixer.norm.weight": m.norm,
                p + "mixer.out_proj.weight": m.out_proj.weight,
                p + "norm2.weight": l.norm2,
                p + "mlp.fc1.weight": l.fc1.weight,
                p + "mlp.fc2.weight": l.fc2.weight,
            })
        return out
