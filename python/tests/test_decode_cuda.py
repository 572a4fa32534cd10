"""The decode paths on CUDA (skipped without a GPU): the fused Triton kernel and the compiled PyTorch step."""
import unittest

import torch

from helpers import randomize, tiny_spec
from mlactl_torch import decode as D
from mlactl_torch import decode_triton as DT
from mlactl_torch import model as M

CUDA = torch.cuda.is_available()


@unittest.skipUnless(CUDA, "no CUDA device: the CUDA decode paths are tested on a GPU machine")
class CudaDecode(unittest.TestCase):
    def setUp(self):
        torch.backends.cuda.matmul.allow_tf32 = False

    def test_fused_kernel_equals_float64_at_ragged_lengths(self):
        if DT.triton is None:
            self.skipTest("Triton is not installed")
        device = torch.device("cuda")
        for spec in (tiny_spec(variant="qk-norm", G=2), M.ModelSpec(**{**tiny_spec().__dict__, "H": 16, "dc": 512, "dr": 64, "G": 16})):
            for dtype in (torch.float32, torch.bfloat16):
                fused = DT.checked_kernel(device, dtype, spec)
                self.assertIsNotNone(fused, f"no kernel config passed for {dtype}")
                for B, S in ((1, 1), (1, 65), (8, 1000), (3, 4099)):
                    for rk_kind in ("none", "full", "nope"):
                        for with_rope in (False, True):  # the query rotated before the kernel, or by it
                            args, rope, want = DT.check_case(spec, B, S, rk_kind, with_rope, dtype, device, seed=S + B)
                            self.assertLessEqual(DT.relative_error(fused(*args, rope=rope), want), DT.tolerance(dtype),
                                                 f"{dtype} B={B} S={S} rk={rk_kind} rope={with_rope}")

    def test_fused_generation_gives_the_same_tokens_and_verify_passes(self):
        spec = tiny_spec(variant="qk-norm", G=2, scope="nope")
        model = M.MLAForCausalLM(spec)
        randomize(model, 4)
        model = model.cuda().eval()
        fused = D.fused_attention_for(torch.device("cuda"), torch.float32, spec)
        plain = D.greedy_generate(model, [3, 1, 4], 12, "latent+invrms", None, 37)
        if fused is not None:
            self.assertEqual(D.greedy_generate(model, [3, 1, 4], 12, "latent+invrms", None, 37, fused)["tokens"], plain["tokens"])
        report = D.verify_model(model, list(range(2, 18)), 1e-5, 10**9, fused)
        self.assertTrue(report["pass"], report["comparisons"])

    def test_the_compiled_step_equals_the_eager_step(self):
        if not D.compile_available(torch.device("cuda")):
            self.skipTest("torch.compile is not available or switched off")
        from mlactl_torch import bench_decode as BD

        spec = M.ModelSpec(**{**tiny_spec().__dict__, "variant": "qk-norm", "G": 2, "L": 1})
        attn = BD.make_layer(spec, 1, "cuda")
        x = torch.randn(2, spec.d, device="cuda")
        with torch.no_grad():
            c, kp = BD.draw_history(attn, spec, x, 300, 0)
            cos, sin = (t.cuda() for t in M.rope_tables(spec.dr, 300, spec.rope_theta))
            layer = D.DecodeLayer(attn, spec, cos, sin)
            cache = BD.build_cache("latent+invrms", layer, c, kp, torch.float32)
            eager = layer.attend(x[:, None], cache, 300)
            layer.compile(chunk=128)  # 300 rows: two whole chunks and a short one; 256: whole chunks only
            for S in (300, 299, 256):  # more lengths: the compiled functions take S as a dynamic size
                compiled = layer.attend(x[:, None], cache, S)
                layer.uncompile()
                want = layer.attend(x[:, None], cache, S)
                layer.compile(chunk=128)
                torch.testing.assert_close(compiled, want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(layer.attend(x[:, None], cache, 300), eager, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    unittest.main()
