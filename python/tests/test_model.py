"""The model against the float64 NumPy transcription of docs/checkpoint-format.md, for every variant and option."""
import unittest

import numpy as np
import torch

from helpers import numpy_forward, randomize, tiny_spec, variant_cases
from mlactl_torch import model as M
from mlactl_torch.checkpoint import checkpoint_config

# float32 against float64: logits of this tiny model are O(1-10); the float32 pass keeps about 6 digits.
FP32_REL_TOL = 2e-5
# float64 against float64: only the operation order differs.
FP64_REL_TOL = 1e-12


def cases():
    """The variant cases and a tied head."""
    yield from variant_cases()
    yield tiny_spec(variant="qk-norm", tied=True, G=2)


def reference(model, tokens):
    cfg = checkpoint_config(model.spec, None)
    W = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    return np.stack([numpy_forward(cfg, W, row) for row in tokens.tolist()])


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


class ForwardMatchesReference(unittest.TestCase):
    def setUp(self):
        self.tokens = torch.randint(0, 37, (2, 11), generator=torch.Generator().manual_seed(3))

    def test_float32_and_float64_forward_for_every_variant_scope_and_group_count(self):
        for spec in cases():
            with self.subTest(variant=spec.variant, scope=spec.scope, G=spec.G, dq=spec.dq, tied=spec.tied):
                model = M.MLAForCausalLM(spec)
                randomize(model, seed=5)
                ref = reference(model, self.tokens)
                with torch.no_grad():
                    got32 = model(self.tokens).logits.numpy()
                    got64 = model.double()(self.tokens).logits.numpy()
                self.assertLessEqual(rel_err(got32, ref), FP32_REL_TOL)
                self.assertLessEqual(rel_err(got64, ref), FP64_REL_TOL)

    def test_per_head_max_logits_match_the_reference_scores(self):
        for spec in (tiny_spec(variant="baseline"), tiny_spec(variant="qk-norm", G=2, scope="nope", dq=7)):
            model = M.MLAForCausalLM(spec).double()
            randomize(model, seed=9)
            maxima = []
            for row in self.tokens.tolist():
                numpy_forward(checkpoint_config(spec, None), {n: p.detach().numpy() for n, p in model.named_parameters()}, row)
                maxima.append(numpy_forward.last_max_logits)
            expected = np.max(np.stack(maxima), axis=0)  # [L, H], max over the batch
            with torch.no_grad():
                out = model(self.tokens, keep_qk=True)
            whole = np.stack([M.max_attention_logits(q, k, spec.scale).numpy() for q, k in out.qk])
            # A budget of 8 score entries forces one query row per block: the chunking must not change the max.
            chunked = np.stack([M.max_attention_logits(q, k, spec.scale, budget=8).numpy() for q, k in out.qk])
            np.testing.assert_allclose(whole, expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(chunked, whole, rtol=1e-14)

    def test_qk_norm_with_fewer_groups_than_heads_trains(self):
        torch.manual_seed(0)
        for scope in ("full", "nope"):
            spec = tiny_spec(variant="qk-norm", G=2, scope=scope, dq=7)
            model = M.MLAForCausalLM(spec)
            randomize(model, seed=2)
            out = model(self.tokens[:, :-1], self.tokens[:, 1:])
            out.loss.backward()
            for name, p in model.named_parameters():
                self.assertIsNotNone(p.grad, name)
                self.assertTrue(torch.isfinite(p.grad).all(), name)
            for which in ("q_norm", "k_norm"):
                self.assertGreater(getattr(model.model.layers[0].self_attn, which).weight.grad.abs().sum().item(), 0)

    def test_sdpa_and_manual_attention_agree(self):
        if not M.HAS_SDPA:
            self.skipTest("this torch has no scaled_dot_product_attention (torch < 2.0): the manual path is the only one")
        q, k, v = torch.randn(2, 3, 9, 10, dtype=torch.float64), torch.randn(2, 3, 9, 10, dtype=torch.float64), torch.randn(2, 3, 9, 5, dtype=torch.float64)
        has = M.HAS_SDPA
        fused = M.causal_attention(q, k, v, 0.3162)
        try:
            M.HAS_SDPA = False
            manual = M.causal_attention(q, k, v, 0.3162)
        finally:
            M.HAS_SDPA = has
        torch.testing.assert_close(fused, manual, rtol=1e-10, atol=1e-12)


class ParametersAndTables(unittest.TestCase):
    def test_parameter_names_are_the_checkpoint_names(self):
        for spec in (tiny_spec(dq=7, variant="qk-norm"), tiny_spec(tied=True)):
            model = M.MLAForCausalLM(spec)
            self.assertEqual(sorted(n for n, _ in model.named_parameters()), sorted(M.parameter_order(spec)))
            self.assertEqual(list(model.state_dict()), [n for n, _ in model.named_parameters()])  # no buffers saved
            self.assertEqual(M.count_parameters(spec), sum(p.numel() for p in model.parameters()))
        self.assertIn("model.layers.1.self_attn.q_b_proj.weight", M.parameter_order(tiny_spec(dq=7)))
        self.assertNotIn("lm_head.weight", M.parameter_order(tiny_spec(tied=True)))

    def test_rope_tables_are_float64_rounded_once(self):
        cos, sin = M.rope_tables(8, 40, 10000.0)
        angle = np.arange(40)[:, None] * 10000.0 ** (-2 * np.arange(4) / 8)
        self.assertEqual(cos.dtype, torch.float64)
        np.testing.assert_array_equal(cos.float().numpy(), np.cos(angle).astype(np.float32))
        np.testing.assert_array_equal(sin.float().numpy(), np.sin(angle).astype(np.float32))

    def test_rope_rotates_adjacent_pairs(self):
        z = torch.zeros(1, 3, 1, 4)
        z[0, :, 0, 0] = 1.0  # (1, 0) in pair 0
        cos, sin = M.rope_tables(4, 3, 10000.0)
        out = M.apply_rope(z, cos, sin)[0, :, 0]
        torch.testing.assert_close(out[:, 0], cos[:, 0].float())
        torch.testing.assert_close(out[:, 1], sin[:, 0].float())
        self.assertTrue((out[:, 2:] == 0).all())

    def test_init_is_deterministic_and_scaled(self):
        spec = tiny_spec(L=3, d=64, dff=128, vocab=200, init_std=0.02)
        a, b = M.MLAForCausalLM(spec), M.MLAForCausalLM(spec)
        M.init_parameters(a, 4)
        M.init_parameters(b, 4)
        for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            self.assertTrue(torch.equal(p, q), name)
        self.assertTrue((a.model.norm.weight == 1).all())
        self.assertAlmostEqual(a.model.embed_tokens.weight.std().item(), 0.02, delta=0.002)
        self.assertAlmostEqual(a.model.layers[0].mlp.down_proj.weight.std().item(), 0.02 / np.sqrt(6), delta=0.001)


if __name__ == "__main__":
    unittest.main()
