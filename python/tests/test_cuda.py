"""The CUDA paths (skipped without a GPU): fused AdamW, fp32 parity with the CPU, bf16 + torch.compile training,
packed scoring through SDPA's masked kernels."""
import os
import unittest

import torch

from helpers import choice_sets, make_job, randomize, run_in_process, sequence_scores, steps_of, temp_dir, tiny_spec
from mlactl_torch import model as M
from mlactl_torch import optim as O

CUDA = torch.cuda.is_available()


@unittest.skipUnless(CUDA, "no CUDA device: the CUDA paths are tested on a GPU machine")
class CudaPaths(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_packed_scoring_matches_a_float64_forward_per_sequence(self):
        import copy

        from mlactl_torch.score import score_sequences

        model = M.MLAForCausalLM(tiny_spec(variant="qk-norm", G=2))
        randomize(model, 4)
        model.eval()
        ref = copy.deepcopy(model).double()
        seqs, starts = choice_sets(torch.Generator().manual_seed(1), n_items=12)
        model = model.cuda()
        for precision, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 0.1)):
            for pack in (True, False):
                with self.subTest(precision=str(precision), pack=pack):
                    results = score_sequences(model, seqs, "cuda", precision, 4096, starts, pack)
                    for s, f, r in zip(seqs, starts, results):
                        want, _ = sequence_scores(ref, s)
                        self.assertLessEqual(float((torch.tensor(r["logprobs"], dtype=torch.float64) - want[f:]).abs().max()), tolerance * max(1.0, float(want.abs().max())))

    def test_a_checkpoint_loads_straight_onto_the_gpu(self):
        from unittest import mock

        from mlactl_torch import checkpoint as C
        from mlactl_torch import safetensors_io as S

        spec = tiny_spec(variant="qk-norm", G=2)
        model = M.MLAForCausalLM(spec)
        randomize(model, 5)
        C.save_model(self.dir, model, None)
        loaded = M.build_for_loading(spec, "cuda")
        self.assertTrue(hasattr(torch.device, "__enter__"), "torch >= 2.0 builds on the GPU itself")
        # Chunks of 256 bytes: tensors span many, and each pinned buffer is refilled while copies are queued.
        with mock.patch.object(S, "CHUNK_BYTES", 256):
            C.load_model_weights(self.dir, loaded)
        want = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        got = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
        self.assertEqual(sorted(got), sorted(want))
        for name, t in got.items():
            self.assertEqual(t.device.type, "cuda", name)
            self.assertTrue(torch.equal(t.cpu(), want[name].detach()), name)

    def test_fused_adamw_matches_the_pure_update(self):
        if not O.FUSED_ADAMW_AVAILABLE:
            self.skipTest("this torch has no fused AdamW")
        spec = tiny_spec()
        train = {"optimizer": "adamw", "lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8, "weight_decay": 0.1, "muon_momentum": 0.95}
        models = [M.MLAForCausalLM(spec).cuda() for _ in range(2)]
        for m in models:
            randomize(m, 3)
        opts = [O.Optimizer(models[0].named_parameters(), train, fused_adamw=True), O.Optimizer(models[1].named_parameters(), train)]
        self.assertIsNotNone(opts[0]._fused)
        gen = torch.Generator(device="cuda").manual_seed(0)
        for step in range(4):
            grads = [torch.randn(p.shape, device="cuda", generator=gen) for p in models[0].parameters()]
            for m, opt in zip(models, opts):
                for p, g in zip(m.parameters(), grads):
                    p.grad = g.clone()
                opt.step(1e-2 * (step + 1))
        for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        sa, sb = opts[0].state_tensors(), opts[1].state_tensors()
        for key in sa:
            torch.testing.assert_close(sa[key].cpu(), sb[key].cpu(), rtol=1e-5, atol=1e-7, msg=key)
        opts[0].load_state(sb)  # a resume resets the fused kernel's own step counters too
        self.assertTrue(all(s["step"].item() == 4 for s in opts[0]._fused.state.values()))

    def test_triton_max_logit_kernel_matches_float32_scores(self):
        from mlactl_torch import kernels

        if kernels.triton is None:
            self.skipTest("Triton is not installed")
        torch.backends.cuda.matmul.allow_tf32 = False  # the reference products in full float32
        gen = torch.Generator(device="cuda").manual_seed(1)
        for B, H, T, D in ((2, 4, 300, 96), (1, 16, 2048, 96), (3, 2, 17, 40)):
            q = (torch.randn(B, T, H, D, device="cuda", generator=gen) * 2).bfloat16().transpose(1, 2)
            k = (torch.randn(B, T, H, D, device="cuda", generator=gen) * 2).bfloat16().transpose(1, 2)
            got = kernels.max_attention_logits(q, k, 0.1)
            want = M.max_attention_logits(q.float(), k.float(), 0.1)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{(B, H, T, D)}")
        self.assertTrue(kernels.self_check(torch.device("cuda"), torch.bfloat16, 96))

    def jobs(self, engine: dict, name: str):
        spec = tiny_spec(variant="qk-clip", dq=7)
        job = make_job(self.dir, spec, total_steps=6, run_dir=os.path.join(self.dir, name))
        job["config"]["train"].update(optimizer="muon")
        job["config"]["train"]["qk_clip"]["tau"] = 3.0
        job["config"]["engine"] = engine
        return job

    def test_fp32_on_cuda_matches_the_cpu(self):
        # Newton-Schulz runs in bf16 on CUDA by design, so the fp32 comparison uses AdamW for all weights.
        cpu_job = self.jobs({"device": "cpu", "precision": "fp32", "compile": False}, "cpu-adamw")
        cuda_job = self.jobs({"device": "cuda", "precision": "fp32", "compile": False}, "cuda-adamw")
        for j in (cpu_job, cuda_job):
            j["config"]["train"]["optimizer"] = "adamw"
        _, a = run_in_process(cpu_job)
        code, b = run_in_process(cuda_job)
        self.assertEqual(code, 0)
        self.assertEqual(b[0]["device"], "cuda:0")
        for x, y in zip(steps_of(a), steps_of(b)):
            self.assertEqual(x["batch_hash"], y["batch_hash"])
            self.assertAlmostEqual(x["train_loss"], y["train_loss"], delta=1e-4 * x["train_loss"])
            self.assertEqual(x["heads_clipped"], y["heads_clipped"])

    def test_bf16_compiled_training_tracks_fp32(self):
        _, ref = run_in_process(self.jobs({"device": "cpu", "precision": "fp32", "compile": False}, "ref"))
        code, got = run_in_process(self.jobs({"device": "cuda", "precision": "bf16", "compile": "auto"}, "bf16"))
        self.assertEqual(code, 0)
        ready = got[0]
        self.assertEqual((ready["precision"], ready["compile"]), ("bf16", hasattr(torch, "compile")))
        for x, y in zip(steps_of(ref), steps_of(got)):
            self.assertAlmostEqual(x["train_loss"], y["train_loss"], delta=2e-2 * x["train_loss"])  # bf16 rounding
        self.assertEqual(got[-1]["status"], "completed")


if __name__ == "__main__":
    unittest.main()
