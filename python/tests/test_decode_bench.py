"""The decode benchmark (bench_decode.py) and the scoring server's batching (score.py), on the CPU."""
import unittest
from unittest import mock

import torch
import torch.nn.functional as F

from helpers import choice_sets, randomize, sequence_scores, tiny_spec
from mlactl_torch import bench_decode as BD
from mlactl_torch import model as M
from mlactl_torch.decode import DecodeLayer
from mlactl_torch.model import ModelSpec, rope_tables
from mlactl_torch import score as SC
from mlactl_torch.score import pack_rows, plan_passes, score_sequences

DIMS = dict(variant="qk-norm", vocab=1, d=32, L=1, H=4, dq=0, dc=16, dn=8, dr=4, dv=8, dff=1, G=2, scope="full", qk_eps=1e-6, norm_eps=1e-6,
            rope_theta=10000.0, max_seq_len=1, tied=True, init_std=0.02)


def step64(attn, spec, kind, x, c, kp):
    """The decode path in float64: a cache filled from the history, then one attend of the last row's token."""
    S = c.shape[1]
    cos, sin = rope_tables(spec.dr, S, spec.rope_theta)
    layer = DecodeLayer(attn, spec, cos, sin)
    cache = BD.build_cache(kind, layer, c, kp, torch.float64)
    return layer.attend(x[:, None, :], cache, S)[:, 0]


class BenchReference(unittest.TestCase):
    def test_the_explicit_key_reference_equals_the_absorbed_step_in_float64(self):
        for over in (dict(), dict(scope="nope"), dict(G=1), dict(dq=6)):
            spec = ModelSpec(**{**DIMS, **over})
            plain = ModelSpec(**{**spec.__dict__, "variant": "baseline"})
            attn = BD.make_layer(spec, 3, "cpu").double()
            x = torch.randn(2, spec.d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            with torch.no_grad():
                c, kp = BD.draw_history(attn, spec, x, 40, 0)
                for kind, sp in (("latent", plain), ("latent+invrms", spec), ("full-key", spec)):
                    with self.subTest(cache=kind, **over):
                        want = BD.reference_output(attn, sp, x, c, kp)
                        got = step64(attn, sp, kind, x, c, kp)
                        self.assertLessEqual(float((got - want).abs().max() / want.abs().max()), 1e-12)

    def test_a_corrupted_rk_entry_is_caught(self):
        spec = ModelSpec(**DIMS)
        attn = BD.make_layer(spec, 3, "cpu").double()
        x = torch.randn(1, spec.d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            c, kp = BD.draw_history(attn, spec, x, 40, 0)
            cos, sin = rope_tables(spec.dr, 40, spec.rope_theta)
            layer = DecodeLayer(attn, spec, cos, sin)
            cache = BD.build_cache("latent+invrms", layer, c, kp, torch.float64)
            cache.rk[0, 39, 1] *= 1.5  # the new token's own key, the one its query sees most
            got = layer.attend(x[:, None, :], cache, 40)[:, 0]
            want = BD.reference_output(attn, spec, x, c, kp)
        self.assertGreater(float((got - want).abs().max() / want.abs().max()), BD.TOLERANCE["fp32"])


class BenchRun(unittest.TestCase):
    def test_a_small_cpu_run_checks_times_and_bounds_every_cache(self):
        spec = ModelSpec(**DIMS)
        lines = []
        r = BD.run_bench(spec, [64, 100], 2, 2, 0, ["latent", "latent+invrms", "full-key"], 0, torch.device("cpu"), "fp32", log=lines.append)
        self.assertEqual([m["context"] for m in r["measurements"]], [64, 100])
        self.assertFalse(r["fused"]["available"])
        for m in r["measurements"]:
            self.assertEqual([(e["cache"], e["impl"]) for e in m["entries"]], [("latent", "torch"), ("latent+invrms", "torch"), ("full-key", "torch")])
            for e in m["entries"]:
                self.assertLessEqual(e["check_rel_err"], 1e-5)
                self.assertEqual(len(e["samples_ms"]), 2)
                self.assertTrue(all(t > 0 for t in e["samples_ms"]))
                # bytes: the cache rows once (dc+dr, +G, H(dn+dr)+dc numbers of 4 bytes) plus the step's weights
                per_token = {"latent": 20, "latent+invrms": 22, "full-key": 4 * 12 + 16}[e["cache"]] * 4
                # q_proj, o_proj, W_UV, and W_UK for the latent caches (full-key's keys are explicit)
                weights = (4 * 12 * 32 + 32 * 4 * 8 + 4 * 8 * 16 + (4 * 8 * 16 if e["cache"] != "full-key" else 0)) * 4
                self.assertEqual(e["bytes_read"], 2 * m["context"] * per_token + weights)
                self.assertAlmostEqual(e["bound_ms"], e["bytes_read"] / (r["copy_bandwidth_gbs"] * 1e9) * 1000)
        self.assertTrue(any("outputs agree" in line for line in lines))

    def test_bf16_runs_within_its_tolerance_and_a_full_memory_is_refused(self):
        spec = ModelSpec(**DIMS)
        r = BD.run_bench(spec, [32], 1, 1, 0, ["latent", "latent+invrms"], 0, torch.device("cpu"), "bf16", log=lambda m: None)
        for e in r["measurements"][0]["entries"]:
            self.assertLessEqual(e["check_rel_err"], BD.TOLERANCE["bf16"])
        with self.assertRaisesRegex(BD.BenchError, r"^--contexts 1099511627776: needs an estimated"):
            BD.run_bench(spec, [1 << 40], 1, 1, 0, ["latent"], 0, torch.device("cpu"), "fp32", log=lambda m: None)


class ScoringPasses(unittest.TestCase):
    def test_plan_sorts_by_length_and_keeps_the_budget(self):
        lengths = [5, 30, 7, 30, 2, 12, 12, 9]
        passes = plan_passes(lengths, 40)
        self.assertEqual(sorted(i for p in passes for i in p), list(range(len(lengths))))
        for p in passes:
            self.assertLessEqual(len(p) * max(lengths[i] for i in p), max(40, max(lengths[i] for i in p)))
            self.assertEqual([lengths[i] for i in p], sorted((lengths[i] for i in p), reverse=True))
        padded = [len(p) * lengths[p[0]] for p in passes]
        self.assertEqual(padded, sorted(padded, reverse=True))  # the largest pass first: out of memory shows at once


    def test_scores_equal_a_float64_forward_per_sequence_packed_or_not(self):
        import copy

        for spec in (tiny_spec(variant="qk-norm", G=2), tiny_spec(variant="baseline", dq=7), tiny_spec(variant="qk-norm", G=4, scope="nope")):
            model = M.MLAForCausalLM(spec)
            randomize(model, 2)
            model.eval()
            ref = copy.deepcopy(model).double()
            seqs, starts = choice_sets(torch.Generator().manual_seed(0))
            for pack in (True, False):
                for budget, head_elements in ((60, 1 << 28), (4096, 1 << 28), (4096, 5 * spec.vocab)):  # passes; head chunks of 5
                    with self.subTest(variant=spec.variant, scope=spec.scope, dq=spec.dq, pack=pack, budget=budget, head_elements=head_elements), \
                            mock.patch.object(SC, "HEAD_ELEMENTS", head_elements):
                        results = score_sequences(model, seqs, "cpu", torch.float32, budget, starts, pack)
                        for s, f, r in zip(seqs, starts, results):
                            want, greedy = sequence_scores(ref, s)
                            self.assertEqual(len(r["logprobs"]), len(s) - 1 - f)
                            err = float((torch.tensor(r["logprobs"], dtype=torch.float64) - want[f:]).abs().max())
                            self.assertLessEqual(err, 1e-5 * max(1.0, float(want.abs().max())))  # float32 against float64
                            self.assertEqual(r["greedy"], greedy[f:].int().tolist())

    def test_a_choice_set_packs_into_one_row_and_order_does_not_change_scores(self):
        ctx = list(range(1, 11))
        seqs = [ctx + [11, 12], ctx + [13], ctx + [14, 15, 16], [20, 21, 22], ctx[:6] + [30, 31], [5, 6, 7, 8, 9, 1]]
        rows = pack_rows(seqs)
        # The three choices share all 10 context tokens; the lone one breaks the run; a 6-token prefix shared with
        # the context is a new row (it follows a lone sequence), and the last shares only 0 tokens.
        self.assertEqual([(r.members, r.shared, r.length) for r in rows],
                         [([0, 1, 2], 10, 10 + 1 + 0 + 2), ([3], 2, 2), ([4], 7, 7), ([5], 5, 5)])
        self.assertEqual([(r.members, r.shared) for r in pack_rows([ctx + [1], ctx[:5] + [9, 9]])], [([0, 1], 5)])  # the prefix shrinks to fit
        self.assertEqual(len(pack_rows([ctx + [1], ctx[:5] + list(range(20, 32))])), 2)  # shares 5 of its 16: not packed
        self.assertEqual(len(pack_rows([list(range(100)), [0, 1, 2, 3, 50, 51, 52, 53]])), 2)  # 4 of the first's 99
        long_ctx = list(range(100))
        rows = pack_rows([long_ctx + [1], long_ctx + [2], long_ctx + [3], long_ctx[:6] + [7, 8, 9, 10, 11]])
        self.assertEqual([(r.members, r.shared) for r in rows], [([0, 1, 2], 100), ([3], 10)])  # no shrinking to 6
        # Packed rows and lone sequences never share a pass: lone ones keep the plain causal attention.
        self.assertEqual(plan_passes([13, 2, 7, 5], 100, [True, False, False, True]), [[0, 3], [2, 1]])
        self.assertEqual(len(pack_rows([ctx + [1, 2], ctx + [3, 4]], limit=11)), 2)  # 12 tokens packed: over the limit
        self.assertEqual(len(pack_rows([ctx + [1, 2], ctx + [3, 4]], limit=12)), 1)
        model = M.MLAForCausalLM(tiny_spec(variant="qk-clip"))
        randomize(model, 5)
        model.eval()
        starts = [9, 9, 9, 0, 5, 2]
        base = score_sequences(model, seqs, "cpu", torch.float32, 4096, starts)
        order = [4, 2, 5, 0, 3, 1]
        shuffled = score_sequences(model, [seqs[i] for i in order], "cpu", torch.float32, 4096, [starts[i] for i in order])
        for k, i in enumerate(order):
            self.assertEqual(shuffled[k]["greedy"], base[i]["greedy"])
            self.assertLessEqual(max(abs(a - b) for a, b in zip(shuffled[k]["logprobs"], base[i]["logprobs"])), 1e-5)

    def test_bad_starts_are_refused_naming_the_sequence(self):
        model = M.MLAForCausalLM(tiny_spec())
        with self.assertRaisesRegex(ValueError, r"'from' of sequence 1 is 2; expected an integer in 0\.\.1"):
            score_sequences(model, [[1, 2, 3], [4, 5, 6]], "cpu", torch.float32, 100, [0, 2])
        with self.assertRaisesRegex(ValueError, r"1 values in 'from' for 2 sequences"):
            score_sequences(model, [[1, 2, 3], [4, 5, 6]], "cpu", torch.float32, 100, [0])

    def test_the_server_answers_in_order_and_says_where_its_time_went(self):
        import contextlib
        import io
        import json
        import os
        import time
        from unittest import mock

        from mlactl_torch import score as SC

        model = M.MLAForCausalLM(tiny_spec(variant="qk-norm", G=2))
        randomize(model, 3)
        model.eval()
        requests = [{"id": 0, "seqs": [[1, 2, 3], [4, 5]]}, {"id": 1, "seqs": [[6, 7, 8, 9]], "from": [5]}, {"id": 2, "seqs": [[6, 7, 8, 9]], "from": [1]}]
        stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in requests) + "\n")
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(SC, "load_for_scoring", return_value=model), mock.patch.object(SC.sys, "stdin", stdin), \
                mock.patch.object(SC.sys, "stdout", out), mock.patch.dict(os.environ, {"MLACTL_SCORE_TIMING": "1"}), contextlib.redirect_stderr(err):
            before = time.time()
            self.assertEqual(SC.serve("unused", "cpu", "fp32", since=time.perf_counter() - 2.5), 0)
        lines = [json.loads(l) for l in out.getvalue().splitlines()]
        self.assertEqual(lines[0]["event"], "ready")
        self.assertTrue(before <= lines[0]["ready_at"] <= time.time(), lines[0]["ready_at"])  # wall clock, seconds
        self.assertEqual([l["id"] for l in lines[1:]], [0, 1, 2])
        self.assertEqual([len(r["logprobs"]) for r in lines[1]["results"]], [2, 1])
        self.assertRegex(lines[2]["error"], r"^'from' of sequence 0 is 5")  # answered, and the process goes on
        self.assertEqual([len(r["logprobs"]) for r in lines[3]["results"]], [2])
        self.assertRegex(err.getvalue(), r"^score timing: imports 2\.5\d s, loading [\d.]+ s \(model and weights\), ready after [\d.]+ s; 3 requests, 4 sequences; computing [\d.]+ s \(per request: [\d.]+ [\d.]+ [\d.]+\); "
                                         r"reading requests [\d.]+ s; writing answers [\d.]+ s\n$")


if __name__ == "__main__":
    unittest.main()
