"""Checkpoint folders: streamed safetensors, byte-identical to the TS writer; strict loading; both engines read each other's."""
import json
import os
import unittest

import numpy as np
import torch

from helpers import base_config, randomize, spec_json, temp_dir, tiny_spec, ts_reference
from mlactl_torch import checkpoint as C
from mlactl_torch import model as M
from mlactl_torch import safetensors_io as S
from mlactl_torch.optim import Optimizer


def tiny_training_setup(spec, optimizer="muon"):
    model = M.MLAForCausalLM(spec)
    randomize(model, seed=4)
    opt = Optimizer(model.named_parameters(), {**base_config()["train"], "optimizer": optimizer})
    return model, opt


class Safetensors(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_bytes_equal_the_ts_writer_and_read_back_in_small_chunks(self):
        tensors = {"b.weight": torch.randn(3, 5), "a": torch.arange(7, dtype=torch.float32), "step": torch.tensor(12, dtype=torch.int32), "z.empty": torch.zeros(0, 4)}
        ours = os.path.join(self.dir, "ours.safetensors")
        theirs = os.path.join(self.dir, "theirs.safetensors")
        old = S.CHUNK_BYTES
        S.CHUNK_BYTES = 7  # many partial chunks, none aligned to an element
        try:
            S.write_safetensors(ours, tensors, {"optimizer": "muon"})
            back, meta = S.read_safetensors(ours, use_package=False)
        finally:
            S.CHUNK_BYTES = old
        self.assertEqual(meta, {"optimizer": "muon"})
        for name, t in tensors.items():
            self.assertTrue(torch.equal(back[name], t), name)
        payload = {n: {"shape": list(t.shape), "dtype": "I32" if t.dtype == torch.int32 else "F32", "values": t.flatten().tolist()} for n, t in tensors.items()}
        ts_reference({"kind": "encode_safetensors", "file": theirs, "tensors": payload, "metadata": {"optimizer": "muon"}})
        with open(ours, "rb") as a, open(theirs, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_malformed_files_are_refused_in_one_line(self):
        path = os.path.join(self.dir, "x.safetensors")
        S.write_safetensors(path, {"w": torch.ones(4)})
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 4)
        with self.assertRaisesRegex(S.SafetensorsError, "tensor w has inconsistent offsets"):
            S.read_header(path)
        with open(path, "wb") as f:
            f.write(b"\x05")
        with self.assertRaisesRegex(S.SafetensorsError, "too short"):
            S.read_header(path)


class ModelAndTrainingCheckpoints(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_training_checkpoint_round_trip_is_exact_and_atomic(self):
        spec = tiny_spec(variant="qk-norm", dq=7, G=2)
        model, opt = tiny_training_setup(spec)
        for slot in opt.slots:  # non-trivial optimizer state
            for t in slot[4].values():
                t.normal_()
        opt.steps = 5
        state = C.new_train_state(1234, 10, 2)
        state.update(step=5, tokens=640)
        folder = C.save_training_checkpoint(self.dir, model, opt, state, {"name": "byte", "hash": "h", "eos": 256})
        self.assertEqual(sorted(os.listdir(folder)), ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"])
        self.assertEqual(os.listdir(os.path.join(self.dir, "ckpt")), ["step-5"])  # the .partial folder was renamed
        self.assertEqual(C.latest_checkpoint(self.dir), folder)
        model2, opt2 = tiny_training_setup(spec)
        M.init_parameters(model2, 99)
        back = C.load_training_checkpoint(folder, model2, opt2, use_package=False)
        self.assertEqual(back, state)
        for (name, p), (_, q) in zip(model.named_parameters(), model2.named_parameters()):
            self.assertTrue(torch.equal(p, q), name)
        a, b = opt.state_tensors(), opt2.state_tensors()
        for key in a:
            self.assertTrue(torch.equal(a[key], b[key]), key)
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        self.assertEqual(config["qk_norm"], {"scope": "full", "key_groups": 2, "eps": 1e-6, "applied": "before-rope"})
        self.assertEqual(config["q_lora_rank"], 7)

    def test_strict_refusal_of_missing_extra_and_reshaped_tensors(self):
        spec = tiny_spec()
        model, opt = tiny_training_setup(spec)
        folder = os.path.join(self.dir, "m")
        C.save_model(folder, model, None)
        path = os.path.join(folder, "model.safetensors")
        tensors, meta = S.read_safetensors(path)
        cases = {
            "missing tensor model.norm.weight": {k: v for k, v in tensors.items() if k != "model.norm.weight"},
            "unexpected tensor model.layers.0.self_attn.q_norm.weight": {**tensors, "model.layers.0.self_attn.q_norm.weight": torch.ones(10)},
            r"tensor lm_head.weight has shape \[37, 23\]": {**tensors, "lm_head.weight": torch.zeros(37, 23)},
        }
        for message, record in cases.items():
            S.write_safetensors(path, record, meta)
            with self.assertRaisesRegex(C.CheckpointError, message):
                C.load_model_weights(folder, M.MLAForCausalLM(spec))
        C.save_model(folder, model, None)
        with self.assertRaisesRegex(C.CheckpointError, "variant is \"baseline\", the run's model has \"qk-clip\""):
            C.check_config_matches(folder, tiny_spec(variant="qk-clip"))


class LoadingForInference(unittest.TestCase):
    """build_for_loading + load_model_weights (what scoring and decoding open) give the saved model exactly."""

    def setUp(self):
        self.dir = temp_dir(self)

    def test_the_loaded_model_equals_the_saved_one(self):
        for spec in (tiny_spec(variant="qk-norm", dq=7, G=2), tiny_spec(variant="baseline", tied=True)):
            model = M.MLAForCausalLM(spec)
            randomize(model, seed=6)
            folder = os.path.join(self.dir, spec.variant)
            C.save_model(folder, model, None)
            with self.subTest(variant=spec.variant):
                loaded = M.build_for_loading(spec, "cpu")
                C.load_model_weights(folder, loaded)
                want = dict(model.state_dict(keep_vars=False))
                got = dict(loaded.state_dict())
                self.assertEqual(sorted(got), sorted(want))
                for name in want:
                    self.assertTrue(torch.equal(got[name], want[name]), name)
                for (name, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers()):  # RoPE tables: derived, not saved
                    self.assertTrue(torch.equal(a, b), name)

    def test_a_refused_file_leaves_the_parameters_untouched(self):
        spec = tiny_spec()
        model = M.MLAForCausalLM(spec)
        randomize(model, seed=2)
        folder = os.path.join(self.dir, "m")
        C.save_model(folder, model, None)
        path = os.path.join(folder, "model.safetensors")
        tensors, meta = S.read_safetensors(path)
        S.write_safetensors(path, {**tensors, "model.norm.weight": torch.ones(3)}, meta)
        target = M.MLAForCausalLM(spec)
        before = {k: v.clone() for k, v in target.state_dict().items()}
        with self.assertRaisesRegex(C.CheckpointError, r"tensor model.norm.weight has shape \[3\]"):
            C.load_model_weights(folder, target)
        for name, value in target.state_dict().items():
            self.assertTrue(torch.equal(value, before[name]), name)


class CrossEngine(unittest.TestCase):
    """The tfjs engine's checkpoints load here and give the same logits; ours load there and give the same logits."""

    def setUp(self):
        self.dir = temp_dir(self)

    def test_tfjs_checkpoint_loads_here_and_ours_loads_there(self):
        tokens = [[1, 5, 9, 2, 33, 7, 0, 12, 4], [36, 2, 2, 8, 19, 3, 11, 6, 1]]
        specs = [tiny_spec(variant="qk-norm", dq=7, G=2, scope="nope"), tiny_spec(variant="qk-clip", tied=True)]
        tasks = []
        for i, spec in enumerate(specs):
            config = {"seed": 3, "model": {"variant": spec.variant}, "train": {"optimizer": "muon"}}
            tasks.append({"kind": "init_checkpoint", "config": config, "spec": spec_json(spec), "run_dir": os.path.join(self.dir, f"tfjs{i}"), "tokens": tokens})
        ts = ts_reference(*tasks)
        ours = []
        for i, (spec, result) in enumerate(zip(specs, ts)):
            model = M.MLAForCausalLM(spec)
            opt = Optimizer(model.named_parameters(), {**base_config()["train"], "optimizer": "muon"})
            state = C.load_training_checkpoint(result["dir"], model, opt, use_package=False)
            self.assertEqual(state["step"], 0)
            with torch.no_grad():
                out = model(torch.tensor(tokens), keep_qk=True)
            logits = out.logits.numpy()
            want = np.array(result["logits"])
            # Same weights, same float32 math in two frameworks: agreement to float32 rounding.
            self.assertLess(np.abs(logits - want).max() / np.abs(want).max(), 1e-5)
            maxima = np.stack([M.max_attention_logits(q, k, spec.scale).numpy() for q, k in out.qk])
            np.testing.assert_allclose(maxima, np.array(result["maxLogits"]), rtol=1e-5)
            # Now ours, written by this engine, read by the tfjs engine (strictly, as `mlactl score` does).
            opt.steps = 0
            ours.append(C.save_training_checkpoint(os.path.join(self.dir, f"torch{i}"), model, opt, C.new_train_state(1, 1, 0), None))
        back = ts_reference(*[{"kind": "load_and_forward", "dir": d, "tokens": tokens} for d in ours],
                            *[{"kind": "restore_checkpoint", "dir": d, "config": {"seed": 3, "model": {"variant": s.variant}, "train": {"optimizer": "muon"}}, "spec": spec_json(s)} for d, s in zip(ours, specs)])
        for result, original in zip(back[:2], ts):
            np.testing.assert_array_equal(np.array(result["logits"], dtype=np.float32), np.array(original["logits"], dtype=np.float32))
        for result in back[2:]:
            self.assertEqual(result["steps"], 0)


if __name__ == "__main__":
    unittest.main()
