#!/usr/bin/env python3
"""Same-run PyTorch baseline for `deno task bench` (issue #5).

Times the dense SAELens 6.18 training step in plain torch, per architecture, at one shape:
forward as SAELens writes it (every loss term, TopK-family AuxK with a fixed set of dead latents),
the trainer's no-grad bookkeeping, backward through autograd, `clip_grad_norm_(params, 1.0)` and a
`torch.optim.Adam` step. The configs match `bench/train_step.ts`. Two warm-up steps, then `--steps`
timed steps. Prints one JSON object on stdout:

  {"torch_version", "threads", "blas", "env", "gemm", "results": [{"arch", "batch", "d_in", "d_sae", "k",
   "tokens_per_s", "ms_per_step"}]}

Run it as `bench/baseline.ts` does: `OPENBLAS_NUM_THREADS=2`, with `OPENBLAS_CORETYPE` and
`OPENBLAS_L2_SIZE` unset (on this project's machines they halve OpenBLAS's GEMM).
"""

import argparse
import json
import math
import os
import sys
import time

import torch

ARCHS = ["standard", "topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "gated"]


def blas_library() -> str:
    """The BLAS shared library this process actually loaded (resolved through symlinks)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return "unknown"
    hits = sorted(
        os.path.realpath(p)
        for p in paths
        if os.path.sep in p and any(n in os.path.basename(p) for n in ("blas", "mkl_rt", "blis"))
    )
    return ", ".join(dict.fromkeys(hits)) or "none found in /proc/self/maps"


class JumpReLUFn(torch.autograd.Function):
    """SAELens's JumpReLU: f = h * (h > t); dh = (h > t) g; dt = sum(-(t/bw) rect((h-t)/bw) g)."""

    @staticmethod
    def forward(ctx, h, t, bw):
        ctx.save_for_backward(h, t)
        ctx.bw = bw
        return h * (h > t)

    @staticmethod
    def backward(ctx, g):
        h, t = ctx.saved_tensors
        bw = ctx.bw
        rect = ((h - t) / bw).abs() < 0.5
        dh = (h > t) * g
        dt = (-(t / bw) * rect * g).sum(0)
        return dh, dt, None


class StepFn(torch.autograd.Function):
    """SAELens's Step: H = (h > t); no gradient to h; dt = sum(-(1/bw) rect((h-t)/bw) g)."""

    @staticmethod
    def forward(ctx, h, t, bw):
        ctx.save_for_backward(h, t)
        ctx.bw = bw
        return (h > t).to(h.dtype)

    @staticmethod
    def backward(ctx, g):
        h, t = ctx.saved_tensors
        bw = ctx.bw
        rect = ((h - t) / bw).abs() < 0.5
        dt = (-(1.0 / bw) * rect * g).sum(0)
        return None, dt, None


def gemm_gflops(m: int, k: int, n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` GFLOP/s of one [m,k]·[k,n] f32 product, the encoder GEMM's shape."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best / 1e9


def matryoshka_widths(d_sae: int, k: int) -> list:
    widths = [d_sae // 8, d_sae // 2, d_sae]
    return [w for i, w in enumerate(widths) if w >= k and (i == 0 or w > widths[i - 1])]


class Sae:
    """Parameters and the training forward pass of one SAELens 6.18 TrainingSAE (dense path)."""

    def __init__(self, arch: str, d_in: int, d_sae: int, k: int, batch: int, gen):
        self.arch, self.d_in, self.d_sae, self.k = arch, d_in, d_sae, k
        bound = math.sqrt(2.0) * math.sqrt(3.0 / d_in)  # kaiming_uniform_, a=0, fan_in = d_in
        w_dec = (torch.rand(d_sae, d_in, generator=gen) * 2 - 1) * bound
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * 0.1
        p = {
            "W_dec": w_dec,
            "W_enc": w_dec.T.clone().contiguous(),
            "b_dec": torch.zeros(d_in),
        }
        if arch == "gated":
            p.update(b_gate=torch.zeros(d_sae), b_mag=torch.zeros(d_sae), r_mag=torch.zeros(d_sae))
        else:
            p["b_enc"] = torch.zeros(d_sae)
        if arch == "jumprelu":
            p["log_threshold"] = torch.full((d_sae,), math.log(0.05))
        self.params = {name: t.requires_grad_(True) for name, t in p.items()}
        self.topk_threshold = 0.0
        self.widths = matryoshka_widths(d_sae, k) if arch == "matryoshka_batchtopk" else []

    # --- TopK family -----------------------------------------------------------------------------
    def _decode_rescaled(self, a, n, w_dec, b_dec):
        return (a * (1.0 / n)) @ w_dec + b_dec

    def _topk_aux(self, x, sae_out, h, n, dead_mask):
        p = self.params
        n_dead = int(dead_mask.sum())
        if n_dead == 0:
            return torch.zeros(())
        residual = (x - sae_out).detach()
        k_aux = self.d_in // 2
        scale = min(n_dead / k_aux, 1.0)
        k_aux = min(k_aux, n_dead)
        masked = torch.where(dead_mask[None, :], h, torch.full_like(h, -math.inf))
        idx = masked.topk(k_aux, dim=-1, sorted=False).indices
        acts = torch.zeros_like(h).scatter(-1, idx, h.gather(-1, idx))
        recons = self._decode_rescaled(acts, n, p["W_dec"], p["b_dec"])
        return 1.0 * scale * (recons - residual).pow(2).sum(-1).mean()

    def forward(self, x, dead_mask):
        """Returns (loss, feature_acts) as SAELens's training_forward_pass computes them."""
        p = self.params
        arch = self.arch
        n = p["W_dec"].norm(dim=1)
        sae_in = x - p["b_dec"]
        if arch == "gated":
            pi_gate = sae_in @ p["W_enc"] + p["b_gate"]
            gate = (pi_gate > 0).to(x.dtype)
            h_mag = sae_in @ (p["W_enc"] * p["r_mag"].exp()[None, :]) + p["b_mag"]
            f = gate * torch.relu(h_mag)
            sae_out = f @ p["W_dec"] + p["b_dec"]
            mse = (sae_out - x).pow(2).sum(-1).mean()
            xc = x - p["b_dec"]
            pg = torch.relu(xc @ p["W_enc"] + p["b_gate"])
            l1 = 1.0 * (pg * n).sum(-1).mean()
            aux = (pg @ p["W_dec"] + p["b_dec"] - x).pow(2).sum(-1).mean()
            return mse + l1 + aux, f
        h = sae_in @ p["W_enc"] + p["b_enc"]
        if arch == "standard":
            f = torch.relu(h)
            sae_out = f @ p["W_dec"] + p["b_dec"]
            mse = (sae_out - x).pow(2).sum(-1).mean()
            l1 = (1.0 * (f * n[None, :]).norm(p=1, dim=-1)).mean()
            return mse + l1, f
        if arch == "jumprelu":
            t = p["log_threshold"].exp()
            f = JumpReLUFn.apply(h, t, 0.05)
            sae_out = f @ p["W_dec"] + p["b_dec"]
            mse = (sae_out - x).pow(2).sum(-1).mean()
            l0 = (1.0 * StepFn.apply(h, t, 0.05).sum(-1)).mean()
            return mse + l0, f
        # topk, batchtopk, matryoshka_batchtopk (rescale_acts_by_decoder_norm=True)
        h = h * n[None, :]
        if arch == "topk":
            top = h.topk(self.k, dim=-1, sorted=False)
            f = torch.zeros_like(h).scatter(-1, top.indices, torch.relu(top.values))
        else:
            a = torch.relu(h)
            flat = a.flatten()
            idx = flat.topk(int(self.k * h.shape[0])).indices
            f = torch.zeros_like(flat).scatter(-1, idx, flat[idx]).reshape(h.shape)
        sae_out = self._decode_rescaled(f, n, p["W_dec"], p["b_dec"])
        mse = (sae_out - x).pow(2).sum(-1).mean()
        loss = mse + self._topk_aux(x, sae_out, h, n, dead_mask)
        if arch != "topk":
            with torch.no_grad():
                pos = f > 0
                if bool(pos.any()):
                    lr_t = 0.01
                    self.topk_threshold = (1 - lr_t) * self.topk_threshold + lr_t * float(f[pos].min())
        for w in self.widths[:-1]:
            rec_w = self._decode_rescaled(f[:, :w], n[:w], p["W_dec"][:w], p["b_dec"])
            loss = loss + (rec_w - x).pow(2).sum(-1).mean()
        return loss, f


def bench_arch(arch: str, batch: int, d_in: int, d_sae: int, k: int, steps: int, dead_fraction: float):
    gen = torch.Generator().manual_seed(0)
    sae = Sae(arch, d_in, d_sae, k, batch, gen)
    params = list(sae.params.values())
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999))
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(1))
    # A fixed dead set so the TopK-family AuxK term is computed (SAELens skips it with none dead).
    dead_mask = torch.zeros(d_sae, dtype=torch.bool)
    n_dead = int(round(d_sae * dead_fraction))
    if n_dead > 0:
        dead_mask[torch.randperm(d_sae, generator=gen)[:n_dead]] = True
    since_fired = torch.zeros(d_sae)
    act_freq = torch.zeros(d_sae)

    def step():
        loss, f = sae.forward(x, dead_mask)
        with torch.no_grad():  # SAETrainer's bookkeeping
            did_fire = (f != 0).any(0)
            since_fired.add_(1)
            since_fired[did_fire] = 0
            act_freq.add_((f != 0).sum(0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return float(loss.detach())

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    seconds = time.perf_counter() - start
    if not math.isfinite(last):
        raise RuntimeError(f"{arch}: non-finite loss {last}")
    return {
        "arch": arch,
        "batch": batch,
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "tokens_per_s": batch * steps / seconds,
        "ms_per_step": seconds * 1000 / steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=12288)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--arch", default=",".join(ARCHS), help="comma-separated list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--dead-fraction",
        type=float,
        default=0.125,
        help="fraction of latents marked dead, so TopK-family AuxK runs",
    )
    args = ap.parse_args()
    archs = [a for a in args.arch.split(",") if a]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        ap.error(f"unknown architecture(s) {unknown}; expected some of {ARCHS}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for arch in archs:
        r = bench_arch(arch, args.batch, args.d_in, args.d_sae, args.k, args.steps, args.dead_fraction)
        print(f"torch {arch}: {r['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
        results.append(r)
    gflops = gemm_gflops(args.batch, args.d_in, args.d_sae)
    env_names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {name: os.environ.get(name) for name in env_names}
    env.update({name: value for name, value in os.environ.items() if name.startswith("MALLOC_")})
    print(
        json.dumps(
            {
                "torch_version": torch.__version__,
                "threads": torch.get_num_threads(),
                "blas": blas_library(),
                "env": env,
                "gemm": {"m": args.batch, "k": args.d_in, "n": args.d_sae, "gflops": gflops},
                "dead_fraction": args.dead_fraction,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
