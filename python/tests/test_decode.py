"""Absorbed decoding (mlactl_torch/decode.py) against the training form and independent float64 references.

Tolerances: float64 against float64 differs only by operation order (1e-12); float32 against float64 keeps about
six digits on these O(1-10) logits (2e-5, the bound test_model.py uses for the training form).
"""
import itertools
import unittest

import numpy as np
import torch

from helpers import numpy_forward, randomize, tiny_spec, variant_cases
from mlactl_torch import decode as D
from mlactl_torch import decode_triton as DT
from mlactl_torch import model as M
from mlactl_torch.checkpoint import checkpoint_config

FP64_REL_TOL = 1e-12
FP32_REL_TOL = 2e-5


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def pair(spec, seed=5):
    """A float32 model and its float64 copy with the same (float32-representable) weights."""
    m32 = M.MLAForCausalLM(spec)
    randomize(m32, seed)
    m64 = M.MLAForCausalLM(spec).double()
    m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})
    return m32.eval(), m64.eval()


TOKENS = torch.randint(0, 37, (13,), generator=torch.Generator().manual_seed(3)).tolist()


class DecodeEqualsTrainingForm(unittest.TestCase):
    def test_every_cache_prefill_then_steps_in_float64_and_float32(self):
        for spec in variant_cases():
            m32, m64 = pair(spec)
            with torch.no_grad():
                train64 = m64(torch.tensor([TOKENS])).logits[0]
            ref = numpy_forward(checkpoint_config(spec, None), {n: p.detach().double().numpy() for n, p in m64.named_parameters()}, TOKENS)
            for kind in D.caches_for(spec):
                for prefill in (1, 6):
                    with self.subTest(variant=spec.variant, scope=spec.scope, G=spec.G, dq=spec.dq, cache=kind, prefill=prefill):
                        self.assertLessEqual(rel_err(D.decode_logits(m64, kind, TOKENS, prefill), train64), FP64_REL_TOL)
                        self.assertLessEqual(rel_err(D.decode_logits(m32, kind, TOKENS, prefill), ref), FP32_REL_TOL)

    def test_a_whole_prompt_as_one_block_is_causal(self):
        spec = tiny_spec(variant="qk-norm", G=2)
        _, m64 = pair(spec)
        with torch.no_grad():
            want = m64(torch.tensor([TOKENS])).logits[0]
        self.assertLessEqual(rel_err(D.decode_logits(m64, "latent+invrms", TOKENS, len(TOKENS)), want), FP64_REL_TOL)

    def test_caches_hold_what_the_design_note_says(self):
        spec = tiny_spec(variant="qk-norm", G=2)  # H 4, dc 12, dr 4, dn 6
        m32, _ = pair(spec)
        dec = D.MLADecoder(m32, "latent+invrms", 1, 10)
        dec.feed(torch.tensor([TOKENS[:7]]))
        self.assertEqual(dec.cache_shapes(), {"c": [1, 7, 12], "kpr": [1, 7, 4], "rk": [1, 7, 2]})
        self.assertEqual(D.numbers_per_token(spec, "latent+invrms"), 12 + 4 + 2)
        self.assertEqual(D.numbers_per_token(spec, "full-key"), 4 * (6 + 4) + 12)
        full = D.MLADecoder(m32, "full-key", 1, 10)
        full.feed(torch.tensor([TOKENS[:3]]))
        self.assertEqual(full.cache_shapes(), {"c": [1, 3, 12], "k": [1, 4, 3, 10]})

    def test_refusals_name_the_flag(self):
        m32, _ = pair(tiny_spec(variant="qk-norm"))
        with self.assertRaisesRegex(D.DecodeError, r"--cache latent: cannot serve a qk-norm model"):
            D.MLADecoder(m32, "latent", 1, 4)
        with self.assertRaisesRegex(D.DecodeError, r"max_seq_len 32"):
            D.MLADecoder(m32, "full-key", 1, 33)
        dec = D.MLADecoder(m32, "full-key", 1, 2)
        with self.assertRaisesRegex(D.DecodeError, r"capacity 2"):
            dec.feed(torch.tensor([[1, 2, 3]]))
        plain, _ = pair(tiny_spec(variant="baseline"))
        with self.assertRaisesRegex(D.DecodeError, r"--cache latent\+invrms: cannot serve a baseline model"):
            D.MLADecoder(plain, "latent+invrms", 1, 4)
        # The bench serves one layer both ways; a layer asked for the other variant's cache refuses too.
        layer = D.DecodeLayer(plain.model.layers[0].self_attn, plain.spec, plain.model.rope_cos, plain.model.rope_sin)
        with self.assertRaisesRegex(D.DecodeError, r"latent\+invrms cache is for the qk-norm variant"):
            layer.check_latent_kind("latent+invrms")


class LatentStep(unittest.TestCase):
    """decode.latent_attention (what the fused kernel must equal) against the formula written out in NumPy."""

    def test_scores_softmax_values_with_and_without_rq_rk(self):
        gen = torch.Generator().manual_seed(0)
        B, H, S, dc, dr, G, w, eps = 2, 4, 9, 12, 4, 2, 10, 1e-6
        q = torch.randn(B, H, dc + dr, generator=gen, dtype=torch.float64)
        kv = torch.randn(B, S, dc + dr, generator=gen, dtype=torch.float64)
        rk = torch.rand(B, S, G, generator=gen, dtype=torch.float64) + 0.5
        q_stat = torch.randn(B, H, w, generator=gen, dtype=torch.float64) * 3
        forms = {"plain": D.latent_attention}
        # The chunked form (CUDA's compiled step): whole chunks and a shorter last one, whole chunks only, one short one.
        for chunk in (4, 3, 16):
            forms[f"chunked {chunk}"] = lambda *a, chunk=chunk: D.latent_attention_chunked(*a, chunk=chunk)
        for (form, attend), rk_kind in itertools.product(forms.items(), ("none", "full", "nope")):
            got = attend(q, kv, None if rk_kind == "none" else rk, dc, rk_kind == "nope", q_stat, eps).numpy()
            want = np.zeros((B, H, dc))
            for b, h in itertools.product(range(B), range(H)):
                g = h // (H // G)
                group = q_stat[b, g * (H // G) : (g + 1) * (H // G)].numpy()  # the group's heads, all w entries
                rq = 1 / np.sqrt((group ** 2).mean() + eps)
                factor = rq * rk[b, :, g].numpy() if rk_kind != "none" else np.ones(S)
                content = kv[b, :, :dc].numpy() @ q[b, h, :dc].numpy()
                positional = kv[b, :, dc:].numpy() @ q[b, h, dc:].numpy()
                s = factor * content + positional if rk_kind == "nope" else factor * (content + positional)
                p = np.exp(s - s.max())
                want[b, h] = (p / p.sum()) @ kv[b, :, :dc].numpy()
            with self.subTest(form=form, rk=rk_kind):
                self.assertLessEqual(rel_err(got, want), FP64_REL_TOL)

    def test_without_triton_or_cuda_the_fused_kernel_is_not_offered(self):
        from mlactl_torch import decode_triton

        self.assertIsNone(D.fused_attention_for(torch.device("cpu"), torch.float32, tiny_spec()))
        if decode_triton.triton is None:
            self.assertIsNone(decode_triton.checked_kernel(torch.device("cpu"), torch.float32, tiny_spec()))
        if not torch.cuda.is_available():
            lines = []
            self.assertEqual(decode_triton.selftest(log=lines.append), 2)
            self.assertIn("no CUDA device", lines[0])


class Generation(unittest.TestCase):
    def test_greedy_tokens_equal_argmax_of_the_training_form_rerun_each_step(self):
        for spec in (tiny_spec(variant="baseline"), tiny_spec(variant="qk-norm", G=2, scope="nope", dq=7)):
            m32, _ = pair(spec, seed=11)
            for kind in D.caches_for(spec):
                with self.subTest(variant=spec.variant, cache=kind):
                    r = D.greedy_generate(m32, [3, 1, 4], 8, kind, eos=None, vocab_limit=30)
                    seq, want = [3, 1, 4], []
                    with torch.no_grad():
                        for _ in range(8):
                            logits = m32(torch.tensor([seq])).logits[0, -1].clone()
                            logits[30:] = float("-inf")  # ids past the tokenizer are never chosen
                            want.append(int(logits.argmax()))
                            seq.append(want[-1])
                    self.assertEqual(r["tokens"], want)
                    self.assertEqual(r["stopped"], "max-tokens")
                    self.assertEqual(r["cache_shapes"]["c"][1], 3 + 8 - 1)

    def test_a_fused_attention_plugs_into_single_token_steps(self):
        """What CUDA runs with the Triton kernel, here with a stand-in of the same signature that counts its calls."""
        for scope in ("nope", "full"):  # full: the positional query's static weight carries gq
            with self.subTest(scope=scope):
                spec = tiny_spec(variant="qk-norm", G=2, scope=scope)
                m32, _ = pair(spec, seed=11)
                calls = []

                def stand_in(*args, rope):
                    calls.append((args[0].shape, args[5].shape))  # qa [B, H, dc]; q_stat, the raw query slice rq comes from
                    # The kernel rotates the positional query itself: rebuild [qa ; qpr] from what the step hands it,
                    # so a wrong position, weight or slice in Rope changes the logits and fails verify.
                    return D.latent_attention(DT.roped_query(args[0], rope).to(args[0].dtype), *args[1:])

                plain = D.greedy_generate(m32, [3, 1, 4], 6, "latent+invrms", None, 37)
                fused = D.greedy_generate(m32, [3, 1, 4], 6, "latent+invrms", None, 37, stand_in)
                self.assertEqual(fused["tokens"], plain["tokens"])
                self.assertEqual(fused["attention"], "fused")
                self.assertEqual(len(calls), 5 * spec.L)  # single-token steps only; the prompt is one causal block
                w = spec.dn if scope == "nope" else spec.dn + spec.dr
                self.assertEqual(calls[0], (torch.Size([1, spec.H, spec.dc]), torch.Size([1, spec.H, w])))
                r = D.verify_model(m32, TOKENS, 1e-5, 10**9, stand_in)
                self.assertIn("latent+invrms (fused) vs training", [c["pair"] for c in r["comparisons"]])
                self.assertTrue(r["pass"], r["comparisons"])

    def test_stops_at_eos(self):
        m32, _ = pair(tiny_spec(), seed=11)
        first = D.greedy_generate(m32, [3, 1, 4], 4, "latent", eos=None, vocab_limit=37)["tokens"]
        r = D.greedy_generate(m32, [3, 1, 4], 4, "latent", eos=first[1], vocab_limit=37)
        self.assertEqual(r["tokens"], first[: first.index(first[1]) + 1])
        self.assertEqual(r["stopped"], "eos")


class Verification(unittest.TestCase):
    def test_report_pairs_and_pass(self):
        m32, _ = pair(tiny_spec(variant="qk-norm", G=2))
        r = D.verify_model(m32, TOKENS, 1e-5, 10**9)
        self.assertEqual([c["pair"] for c in r["comparisons"]], [
            "training vs reference", "latent+invrms vs reference", "full-key vs reference", "latent+invrms vs training", "full-key vs training"])
        self.assertTrue(r["pass"])
        self.assertTrue(all(c["max_rel_error"] <= 1e-5 for c in r["comparisons"]))
        skipped = D.verify_model(m32, TOKENS, 1e-5, 10)
        self.assertFalse(skipped["reference"]["run"])
        self.assertEqual(len(skipped["comparisons"]), 2)

    def test_a_wrong_fold_fails(self):
        """A decode that forgets the key weight's fold must fail verify: the check has teeth."""
        m32, _ = pair(tiny_spec(variant="qk-norm", G=2))
        original = D.DecodeLayer.__init__

        def unfolded(self, *a, **k):
            original(self, *a, **k)
            if self.qk_norm:
                gk = self.attn.k_norm.weight.detach()[: self.spec.dn]
                self.w_uk_absorbed = self.w_uk_absorbed / gk[None, :, None]

        D.DecodeLayer.__init__ = unfolded
        try:
            r = D.verify_model(m32, TOKENS, 1e-5, 10**9)
        finally:
            D.DecodeLayer.__init__ = original
        self.assertFalse(r["pass"])
        self.assertGreater(next(c for c in r["comparisons"] if c["pair"] == "latent+invrms vs training")["max_rel_error"], 1e-3)


if __name__ == "__main__":
    unittest.main()
