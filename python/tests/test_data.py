"""Batch order and hashes against the TS engine; token streams over segments; shard formats; rank slices."""
import json
import os
import unittest

import numpy as np

from helpers import temp_dir, ts_reference
from mlactl_torch import data as D


class BatchOrderMatchesTheTsEngine(unittest.TestCase):
    def test_batch_starts_and_hashes(self):
        calls = []
        # Seeds: default, zero, negative, above 2^32; streams short enough that steps cross several epochs.
        for seed in (1234, 0, -7, 2**40 + 3):
            for step in (0, 1, 5, 37):
                for micro, A in ((0, 1), (2, 3)):
                    calls.append([seed, step, micro, 4, 16, 1000, A])
        calls.append([1234, 3, 0, 8, 7, 50, 1])  # 7 slots: every batch wraps an epoch
        (ts,) = ts_reference({"kind": "batches", "calls": calls})
        for call, want in zip(calls, ts):
            starts = D.batch_starts(*call)
            self.assertEqual(starts, want["starts"], call)
            self.assertEqual(D.batch_hash(starts), want["hash"], call)

    def test_validation_windows(self):
        calls = [[1000, 16, 0], [1000, 16, 100], [1000, 16, 10**9], [17, 16, 5], [16, 16, 5], [5000, 33, 640]]
        (ts,) = ts_reference({"kind": "validation_windows", "calls": calls})
        for call, want in zip(calls, ts):
            self.assertEqual(D.validation_windows(*call), want, call)

    def test_rng_first_draws_and_rejection(self):
        rng = D.Rng.from_seed(1, 2)
        draws = [rng.next_uint32() for _ in range(3)]
        self.assertEqual(len(set(draws)), 3)
        self.assertTrue(all(0 <= rng.next_int(3) < 3 for _ in range(100)))
        order = D.Rng.from_seed(5).shuffle_range(50)
        self.assertEqual(sorted(int(x) for x in order), list(range(50)))


class RankSlices(unittest.TestCase):
    def test_ranks_take_disjoint_slices_of_the_same_global_batch(self):
        global_batch = D.step_starts(1234, 3, 4, 6, 16, 5000)
        flat = sorted(s for mb in global_batch for s in mb)
        for world in (1, 2, 3, 4, 6):  # 4: A = 6 is not divisible, so each micro-batch is split by rows
            parts = [D.rank_slice(global_batch, world, r) for r in range(world)]
            got = sorted(s for part in parts for chunk in part for s in chunk)
            self.assertEqual(got, flat, world)
            sizes = {len(chunk) for part in parts for chunk in part}
            self.assertEqual(len(sizes), 1, world)  # equal chunks: the mean of chunk losses is the step's loss
        self.assertIsNone(D.check_world_size(4, 6, 2))
        self.assertIn("train.grad_accum", D.check_world_size(5, 3, 2))


class TokenStreams(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_segments_of_every_dtype_read_across_boundaries(self):
        a = np.arange(0, 10, dtype=np.uint16)
        b = np.arange(100, 120, dtype=np.uint32) + 70000
        c = np.arange(-5, 5, dtype=np.int32)
        paths = [os.path.join(self.dir, n) for n in ("a.bin", "b.bin", "c.bin")]
        for p, arr in zip(paths, (a, b, c)):
            arr.tofile(p)
        stream = D.TokenStream([
            {"path": paths[0], "dtype": "uint16", "offset_tokens": 2, "tokens": 6},
            {"path": paths[1], "dtype": "uint32", "offset_tokens": 0, "tokens": 20},
            {"path": paths[2], "dtype": "int32", "offset_tokens": 5, "tokens": 5},
        ])
        whole = np.concatenate([a[2:8], b, c[5:]]).astype(np.int64)
        self.assertEqual(len(stream), 31)
        np.testing.assert_array_equal(stream.read(0, 31), whole)
        np.testing.assert_array_equal(stream.read(4, 25), whole[4:29])
        inputs, targets = stream.windows([0, 3, 14], 5)
        np.testing.assert_array_equal(inputs.numpy()[1], whole[3:8])
        np.testing.assert_array_equal(targets.numpy()[2], whole[15:20])
        with self.assertRaises(IndexError):
            stream.read(30, 2)
        with self.assertRaisesRegex(D.DataError, "fewer than the 40 tokens"):
            D.TokenStream([{"path": paths[2], "dtype": "int32", "offset_tokens": 0, "tokens": 40}], "data.train")
        with self.assertRaisesRegex(D.DataError, r"data.train\[0\].dtype"):
            D.TokenStream([{"path": paths[2], "dtype": "float32", "offset_tokens": 0, "tokens": 4}], "data.train")

    def test_llmc_shards_and_a_wrong_magic(self):
        path = os.path.join(self.dir, "fineweb_train_000001.bin")
        tokens = np.arange(500, 900, dtype=np.uint16)
        header = np.zeros(256, dtype=np.int32)
        header[:3] = (20240520, 1, len(tokens))
        with open(path, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.tobytes())
        segs = D.llmc_segments([path])
        self.assertEqual(segs[0]["tokens"], 400)
        stream = D.TokenStream(segs)
        np.testing.assert_array_equal(stream.read(10, 5), tokens[10:15])
        bad = os.path.join(self.dir, "bad.bin")
        header[0] = 12345
        with open(bad, "wb") as f:
            f.write(header.tobytes() + tokens.tobytes())
        with self.assertRaises(D.DataError) as ctx:
            D.TokenStream([{"path": bad, "dtype": "uint16", "format": "llmc", "offset_tokens": 0, "tokens": 10}])
        message = str(ctx.exception)
        self.assertIn(bad, message)
        self.assertIn("magic 12345", message)
        self.assertNotIn("\n", message)

    def test_mlactl_shard_manifest(self):
        for i, arr in enumerate((np.arange(5, dtype=np.uint16), np.arange(5, 9, dtype=np.uint16))):
            arr.tofile(os.path.join(self.dir, f"train-0000{i}.bin"))
        np.arange(3, dtype=np.uint16).tofile(os.path.join(self.dir, "val-00000.bin"))
        manifest = {"format": "mlactl-shards", "version": 1, "dtype": "uint16", "shards": [
            {"file": "train-00000.bin", "split": "train", "tokens": 5, "sha256": ""},
            {"file": "val-00000.bin", "split": "val", "tokens": 3, "sha256": ""},
            {"file": "train-00001.bin", "split": "train", "tokens": 4, "sha256": ""}]}
        path = os.path.join(self.dir, "manifest.json")
        with open(path, "w") as f:
            json.dump(manifest, f)
        stream = D.TokenStream(D.manifest_segments(path, "train"))
        np.testing.assert_array_equal(stream.read(0, 9), np.arange(9))
        self.assertEqual(len(D.TokenStream(D.manifest_segments(path, "val"))), 3)


if __name__ == "__main__":
    unittest.main()
