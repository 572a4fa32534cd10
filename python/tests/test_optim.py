"""AdamW and Muon against hand-written float64 formulas; groups, schedule, clipping and QK-clip against the TS engine."""
import math
import unittest

import numpy as np
import torch

from helpers import randomize, tiny_spec, ts_reference
from mlactl_torch import model as M
from mlactl_torch import optim as O

TRAIN = {"optimizer": "muon", "lr": 0.01, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8, "weight_decay": 0.1, "muon_momentum": 0.95}


def adamw_reference(p, grads, lr, b1, b2, eps, wd):
    """float64 AdamW, straight from the formulas of design/mla-math.md and src/optim/adamw.ts."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def newton_schulz_reference(G, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / (np.sqrt((X * X).sum()) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if G.shape[0] > G.shape[1] else X


def muon_reference(p, grads, lr, mu, wd):
    m = np.zeros_like(p)
    for g in grads:
        m = mu * m + g
        u = g + mu * m
        p = p * (1 - lr * wd) - lr * 0.2 * math.sqrt(max(p.shape)) * newton_schulz_reference(u)
    return p, m


class UpdateFunctions(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(0)

    def test_adamw_matches_the_float64_formula(self):
        for wd in (0.0, 0.1):
            p0 = self.rng.normal(size=(5, 3))
            grads = [self.rng.normal(size=(5, 3)) * 10 ** -k for k in range(4)]  # shrinking grads exercise eps and bias corrections
            p, m, v = torch.tensor(p0), torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64)
            for t, g in enumerate(grads, start=1):
                p, m, v = O.adamw_step(p, torch.tensor(g), m, v, t, 0.01, 0.9, 0.95, 1e-8, wd)
            ref = adamw_reference(p0, grads, 0.01, 0.9, 0.95, 1e-8, wd)
            for got, want in zip((p, m, v), ref):
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)

    def test_muon_matches_the_float64_formula_in_both_orientations(self):
        for shape in ((6, 10), (10, 6)):
            p0 = self.rng.normal(size=shape)
            grads = [self.rng.normal(size=shape) for _ in range(3)]
            p, m = torch.tensor(p0), torch.zeros(shape, dtype=torch.float64)
            for g in grads:
                p, m = O.muon_step(p, torch.tensor(g), m, 0.02, 0.95, 0.1)
            want_p, want_m = muon_reference(p0, grads, 0.02, 0.95, 0.1)
            np.testing.assert_allclose(p.numpy(), want_p, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(m.numpy(), want_m, rtol=1e-12)

    def test_a_stack_of_weights_updates_as_each_weight_alone(self):
        p, g, m = (torch.tensor(self.rng.normal(size=(3, 5, 8))) for _ in range(3))
        stacked = O.muon_step(p, g, m, 0.02, 0.95, 0.1)
        for i in range(3):
            alone = O.muon_step(p[i], g[i], m[i], 0.02, 0.95, 0.1)
            for a, b in zip(stacked, alone):
                torch.testing.assert_close(a[i], b, rtol=1e-12, atol=1e-14)

    def test_newton_schulz_float32_stays_near_the_float64_result(self):
        G = self.rng.normal(size=(32, 48))
        got = O.newton_schulz5(torch.tensor(G, dtype=torch.float32)).double().numpy()
        want = newton_schulz_reference(G)
        self.assertLess(np.abs(got - want).max(), 1e-4)
        s = np.linalg.svd(want, compute_uv=False)
        self.assertTrue(0.6 < s.min() and s.max() < 1.25, s)  # near-orthogonal, not exactly

    def test_scale_and_errors(self):
        self.assertAlmostEqual(O.muon_update_scale(64, 256), 3.2)
        with self.assertRaises(ValueError):
            O.muon_step(torch.zeros(3), torch.zeros(3), torch.zeros(3), 0.1, 0.9, 0)
        with self.assertRaises(ValueError):
            O.adamw_step(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), 0, 0.1, 0.9, 0.9, 1e-8, 0)


class Grouping(unittest.TestCase):
    def test_groups_follow_groups_ts(self):
        spec = tiny_spec(dq=7, variant="qk-norm")
        model = M.MLAForCausalLM(spec)
        opt = O.Optimizer(model.named_parameters(), TRAIN)
        groups = opt.assignments()
        self.assertEqual(groups["model.layers.0.self_attn.q_a_proj.weight"], ("muon", True))
        self.assertEqual(groups["model.layers.1.mlp.down_proj.weight"], ("muon", True))
        self.assertEqual(groups["model.embed_tokens.weight"], ("adamw", True))
        self.assertEqual(groups["lm_head.weight"], ("adamw", True))
        self.assertEqual(groups["model.layers.0.self_attn.k_norm.weight"], ("adamw", False))
        self.assertEqual(groups["model.layers.0.self_attn.q_a_layernorm.weight"], ("adamw", False))
        self.assertTrue(all(g[0] == "adamw" for g in O.Optimizer(model.named_parameters(), {**TRAIN, "optimizer": "adamw"}).assignments().values()))
        with self.assertRaises(ValueError):
            O.assign_param("model.layers.0.self_attn.mystery.weight", (3, 3), "muon")

    def test_state_record_names_and_strict_restore(self):
        model = M.MLAForCausalLM(tiny_spec())
        opt = O.Optimizer(model.named_parameters(), TRAIN)
        record = opt.state_tensors()
        self.assertIn("model.layers.0.self_attn.q_proj.weight.momentum_buffer", record)
        self.assertIn("model.embed_tokens.weight.exp_avg_sq", record)
        self.assertNotIn("model.layers.0.self_attn.q_proj.weight.exp_avg", record)
        self.assertEqual(record["step"].dtype, torch.int32)
        fresh = O.Optimizer(model.named_parameters(), TRAIN)
        changed = {k: (v + 1 if k != "step" else torch.tensor(7, dtype=torch.int32)) for k, v in record.items()}
        fresh.load_state(changed)
        self.assertEqual(fresh.steps, 7)
        self.assertTrue(torch.equal(fresh.state_tensors()["model.norm.weight.exp_avg"], record["model.norm.weight.exp_avg"] + 1))
        with self.assertRaisesRegex(O.StateError, "missing tensor model.norm.weight.exp_avg"):
            fresh.load_state({k: v for k, v in changed.items() if k != "model.norm.weight.exp_avg"})
        with self.assertRaisesRegex(O.StateError, "unexpected tensor extra"):
            fresh.load_state({**changed, "extra": torch.zeros(1)})
        adam = O.Optimizer(model.named_parameters(), {**TRAIN, "optimizer": "adamw"})
        with self.assertRaisesRegex(O.StateError, "unexpected tensor"):
            adam.load_state(record)


class ScheduleClipAndQkClip(unittest.TestCase):
    def test_schedule_equals_the_ts_engine(self):
        calls = []
        for schedule in ("cosine", "wsd"):
            for total, warmup in ((10, 3), (7, 0), (5, 9)):
                cfg = {"lr": 3e-3, "min_lr_ratio": 0.1, "schedule": schedule, "decay_fraction": 0.3}
                calls += [[step, total, warmup, cfg] for step in range(total + 2)]
        (ts,) = ts_reference({"kind": "schedule", "calls": calls})
        for (step, total, warmup, cfg), want in zip(calls, ts):
            got = O.learning_rate(step, total, warmup, cfg["lr"], cfg["min_lr_ratio"], cfg["schedule"], cfg["decay_fraction"])
            self.assertAlmostEqual(got, want, delta=1e-18, msg=(step, total, warmup, cfg))

    def test_clip_by_global_norm(self):
        grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
        norm = O.clip_by_global_norm_(grads, 1.0)
        self.assertAlmostEqual(norm.item(), 5.0, places=6)
        self.assertAlmostEqual(O.global_norm(grads).item(), 1.0, places=5)
        grads = [torch.tensor([0.3, 0.4])]
        O.clip_by_global_norm_(grads, 1.0)
        self.assertTrue(torch.equal(grads[0], torch.tensor([0.3, 0.4])))  # below the limit: untouched
        grads = [torch.tensor([30.0, 40.0])]
        O.clip_by_global_norm_(grads, 0)
        self.assertTrue(torch.equal(grads[0], torch.tensor([30.0, 40.0])))  # 0 turns clipping off

    def test_qk_clip_plan_equals_the_ts_engine(self):
        from helpers import spec_json

        spec = tiny_spec(L=2, H=4)
        maxima = [[150.0, 99.0, 100.0, 400.0], [101.0, 3.0, 1e9, 100.5]]
        (ts,) = ts_reference({"kind": "qkclip_plan", "spec": spec_json(spec), "max_logits": maxima, "qk_clip": {"tau": 100, "alpha": 0.3}})
        q_rows, k_rows = O.plan_qk_clip(spec, torch.tensor(maxima, dtype=torch.float32), 100.0, 0.3)
        np.testing.assert_array_equal(q_rows.numpy(), np.float32(ts["queryRows"]))
        np.testing.assert_array_equal(k_rows.numpy(), np.float32(ts["keyRows"]))
        self.assertEqual(O.heads_over(maxima, 100.0), ts["clipped"])

    def test_qk_clip_brings_a_clipped_heads_max_logit_to_tau(self):
        for dq in (0, 7):
            spec = tiny_spec(variant="qk-clip", dq=dq)
            model = M.MLAForCausalLM(spec).double()
            randomize(model, seed=3)
            tokens = torch.randint(0, spec.vocab, (2, 12), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                before = torch.stack([M.max_attention_logits(q, k, spec.scale) for q, k in model(tokens, keep_qk=True).qk])
            tau = float(before[0].min() + before[0].max()) / 2  # clip about half the heads of layer 0
            maxima = before.tolist()
            maxima[1] = [0.0] * spec.H  # layer 1: nothing to clip
            clipped = sum(O.heads_over(maxima, tau))
            O.apply_qk_clip(model, O.plan_qk_clip(spec, torch.tensor(maxima), tau, 0.5), [0, 1])
            with torch.no_grad():
                out = model(tokens, keep_qk=True)
                after = M.max_attention_logits(*out.qk[0], spec.scale)
            over = before[0] > tau
            self.assertEqual(clipped, int(over.sum()))
            # Layer 0's inputs are unchanged, so a clipped head's logits all shrink by eta: its max becomes tau
            # (up to the row scales' one rounding to float32, as in the tfjs engine).
            np.testing.assert_allclose(after[over].numpy(), tau, rtol=1e-6)
            np.testing.assert_allclose(after[~over].numpy(), before[0][~over].numpy(), rtol=1e-12)


if __name__ == "__main__":
    unittest.main()
