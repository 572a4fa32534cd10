"""End to end: the JSON-lines protocol, exact resume, two gloo processes, SIGINT, divergence and bad input."""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

from helpers import (CHILD_ENV, PYTHON_ROOT, free_port, make_job, parse_events, run_in_process, run_train, steps_of, temp_dir,
                     tiny_spec, write_job)

EVENT_KEYS = {
    "ready": {"engine", "torch", "cuda", "device", "gpu_names", "world_size", "precision", "compile", "threads"},
    "step": {"step", "tokens", "lr", "train_loss", "grad_norm", "max_logit_heads", "heads_clipped", "batch_hash", "val_loss", "elapsed_s"},
    "val": {"step", "val_loss"},
    "checkpoint": {"step", "dir"},
    "done": {"status", "step"},
}


def losses(events):
    return [(e["step"], e["train_loss"], e["batch_hash"]) for e in steps_of(events)]


class ProtocolAndExactResume(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_subprocess_events_follow_the_protocol(self):
        spec = tiny_spec(variant="qk-norm", G=2)
        path = write_job(self.dir, make_job(self.dir, spec, total_steps=4))
        code, events, stderr = run_train(path)
        self.assertEqual(code, 0, stderr)
        kinds = [e["event"] for e in events]
        self.assertEqual(kinds, ["ready", "checkpoint", "step", "step", "val", "step", "val", "step", "checkpoint", "done"])  # val at 3 and at the end
        for e in events:
            self.assertLessEqual(EVENT_KEYS[e["event"]], set(e), e["event"])
        steps = steps_of(events)
        self.assertEqual([s["max_logit_heads"] is not None for s in steps], [True, True, False, True])  # step 1, every 2, last
        self.assertEqual(steps[2]["val_loss"], events[4]["val_loss"])
        self.assertEqual(events[-1], {"event": "done", "status": "completed", "step": 4})
        with open(os.path.join(self.dir, "run", "ckpt", "step-4", "state.json")) as f:
            state = json.load(f)
        self.assertEqual(list(state), ["step", "tokens", "data_cursor", "schedule", "elapsed_s", "best_val_loss", "last_val_loss", "heads_clipped_total", "max_logit_peak"])
        self.assertEqual((state["step"], state["tokens"], state["data_cursor"]), (4, 4 * 128, {"seed": 1234, "step": 4}))
        self.assertEqual(state["schedule"], {"step": 4, "total_steps": 4, "warmup_steps": 2})
        self.assertEqual(state["max_logit_peak"], max(max(map(max, s["max_logit_heads"])) for s in steps if s["max_logit_heads"]))

    def test_straight_and_resumed_runs_are_bit_identical(self):
        spec = tiny_spec(variant="qk-clip", dq=7)
        config = None
        jobs = []
        for name, over in (("straight", {}), ("first", {"stop_after_steps": 3}), ("second", {})):
            job = make_job(self.dir, spec, total_steps=6, run_dir=os.path.join(self.dir, name), **over)
            job["config"]["train"].update(optimizer="muon", lr=2e-2)
            job["config"]["train"]["qk_clip"]["tau"] = 3.0  # clips at some steps: QK-clip is part of what must resume
            jobs.append(job)
        code, straight = run_in_process(jobs[0])
        self.assertEqual(code, 0)
        code, first = run_in_process(jobs[1])
        self.assertEqual(first[-1], {"event": "done", "status": "interrupted", "step": 3})
        jobs[2]["resume_from"] = os.path.join(self.dir, "first", "ckpt", "step-3")
        code, second = run_in_process(jobs[2])
        self.assertEqual(code, 0)
        self.assertEqual([e["event"] for e in second].count("checkpoint"), 1)  # no step-0 checkpoint on resume
        self.assertEqual(losses(straight), losses(first) + losses(second))  # exact float equality
        self.assertGreater(sum(s["heads_clipped"] for s in steps_of(straight)), 0)
        for name in ("model.safetensors", "optimizer.safetensors"):
            with open(os.path.join(self.dir, "straight", "ckpt", "step-6", name), "rb") as a, open(os.path.join(self.dir, "second", "ckpt", "step-6", name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)
        states = []
        for name in ("straight", "second"):
            with open(os.path.join(self.dir, name, "ckpt", "step-6", "state.json")) as f:
                states.append({k: v for k, v in json.load(f).items() if k != "elapsed_s"})
        self.assertEqual(states[0], states[1])


class TwoProcesses(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def run_ranks(self, job_path: str, world: int = 2):
        port = free_port()
        procs = []
        for rank in range(world):
            env = {**CHILD_ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world),
                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)}
            procs.append(subprocess.Popen([sys.executable, "-m", "mlactl_torch", "train", "--job", job_path], cwd=PYTHON_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_, err) in zip(procs, outs):
            self.assertEqual(p.returncode, 0, err[-2000:])
        self.assertEqual(outs[1][0], "")  # only rank 0 speaks
        return parse_events(outs[0][0])

    def test_two_gloo_processes_match_one_process(self):
        # grad_accum 2: each rank takes whole micro-batches; grad_accum 3 with batch_size 4: each takes rows of each.
        for accum in (2, 3):
            with self.subTest(grad_accum=accum):
                spec = tiny_spec(variant="qk-clip")
                job = make_job(self.dir, spec, total_steps=4, run_dir=os.path.join(self.dir, f"one-{accum}"))
                job["config"]["train"].update(grad_accum=accum, optimizer="muon")
                job["config"]["train"]["qk_clip"]["tau"] = 3.0
                job["plan"]["tokens_per_step"] = 4 * accum * 16
                code, single = run_in_process(job)
                self.assertEqual(code, 0)
                job["run_dir"] = os.path.join(self.dir, f"two-{accum}")
                events = self.run_ranks(write_job(self.dir, job, f"job-{accum}.json"))
                self.assertEqual(events[-1]["status"], "completed")
                self.assertEqual(events[0]["world_size"], 2)
                a, b = steps_of(single), steps_of(events)
                self.assertEqual([s["batch_hash"] for s in a], [s["batch_hash"] for s in b])
                self.assertEqual([s["heads_clipped"] for s in a], [s["heads_clipped"] for s in b])
                for x, y in zip(a, b):
                    # Same global batch; only the reduction order differs (float32).
                    self.assertAlmostEqual(x["train_loss"], y["train_loss"], delta=1e-5 * abs(x["train_loss"]))
                    self.assertAlmostEqual(x["grad_norm"], y["grad_norm"], delta=1e-4 * abs(x["grad_norm"]))
                vals = [[e["val_loss"] for e in ev if e["event"] == "val"] for ev in (single, events)]
                self.assertEqual(len(vals[0]), len(vals[1]))
                for x, y in zip(*vals):
                    self.assertAlmostEqual(x, y, delta=1e-5 * x)


    def test_a_checkpoint_of_two_ranks_resumes_in_one_process(self):
        # A run may change its GPU count at a resume: the checkpoint holds the global state, not a rank's.
        spec = tiny_spec(variant="qk-clip")
        jobs = {}
        for name, over in (("straight", {}), ("two", {"stop_after_steps": 3}), ("one", {})):
            job = make_job(self.dir, spec, total_steps=6, run_dir=os.path.join(self.dir, f"resume-{name}"), **over)
            job["config"]["train"].update(grad_accum=2, optimizer="muon")
            job["config"]["train"]["qk_clip"]["tau"] = 3.0
            job["plan"]["tokens_per_step"] = 4 * 2 * 16
            jobs[name] = job
        code, straight = run_in_process(jobs["straight"])
        self.assertEqual(code, 0)
        two = self.run_ranks(write_job(self.dir, jobs["two"], "job-resume-two.json"))
        self.assertEqual(two[-1], {"event": "done", "status": "interrupted", "step": 3})
        jobs["one"]["resume_from"] = os.path.join(self.dir, "resume-two", "ckpt", "step-3")
        code, one = run_in_process(jobs["one"])
        self.assertEqual(code, 0)
        a, b = steps_of(straight), steps_of(two) + steps_of(one)
        self.assertEqual([s["step"] for s in b], [1, 2, 3, 4, 5, 6])
        self.assertEqual([s["batch_hash"] for s in a], [s["batch_hash"] for s in b])
        self.assertEqual([s["heads_clipped"] for s in a], [s["heads_clipped"] for s in b])
        self.assertGreater(sum(s["heads_clipped"] for s in a[3:]), 0)  # QK-clip acts after the resume too
        for x, y in zip(a, b):
            # fp32: two ranks reduce in another order than one process; the difference must not grow after the resume.
            self.assertAlmostEqual(x["train_loss"], y["train_loss"], delta=1e-5 * abs(x["train_loss"]))


class InterruptDivergeAndRefuse(unittest.TestCase):
    def setUp(self):
        self.dir = temp_dir(self)

    def test_sigint_checkpoints_and_the_checkpoint_resumes_exactly(self):
        spec = tiny_spec()
        job = make_job(self.dir, spec, total_steps=400, run_dir=os.path.join(self.dir, "interrupted"))
        job["every"] = {"eval_steps": 0, "ckpt_steps": 0, "maxlogit_steps": 0}
        proc = subprocess.Popen([sys.executable, "-m", "mlactl_torch", "train", "--job", write_job(self.dir, job)], cwd=PYTHON_ROOT,
                                env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events = []
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "step" and events[-1]["step"] == 3:
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=60)
        events += parse_events(rest)
        self.assertEqual(proc.returncode, 0, err[-2000:])
        done = events[-1]
        self.assertEqual(done["status"], "interrupted")
        k = done["step"]
        self.assertLess(k, 400)
        self.assertEqual(events[-2], {"event": "checkpoint", "step": k, "dir": os.path.join(self.dir, "interrupted", "ckpt", f"step-{k}")})
        # Resume for three more steps; a straight in-process run of k + 3 steps must give the same losses exactly.
        resumed = dict(job, resume_from=events[-2]["dir"], stop_after_steps=k + 3, run_dir=os.path.join(self.dir, "resumed"))
        code, after = run_in_process(resumed)
        self.assertEqual(code, 0)
        code, straight = run_in_process(dict(job, stop_after_steps=k + 3, run_dir=os.path.join(self.dir, "straight")))
        self.assertEqual(losses(straight)[:k], losses(events))
        self.assertEqual(losses(straight)[k:], losses(after))

    def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_usable(self):
        from mlactl_torch.checkpoint import latest_checkpoint

        job = make_job(self.dir, tiny_spec(), total_steps=4)
        job["every"] = {"eval_steps": 0, "ckpt_steps": 2, "maxlogit_steps": 0}
        env = {**CHILD_ENV, "MLACTL_TEST_CKPT_PAUSE_MS": "600"}  # a pause between model and optimizer files
        proc = subprocess.Popen([sys.executable, "-m", "mlactl_torch", "train", "--job", write_job(self.dir, job)], cwd=PYTHON_ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "step" and event["step"] == 4:  # the step-4 checkpoint is being written now
                break
        partial = os.path.join(self.dir, "run", "ckpt", ".step-4.partial")
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(partial, "model.safetensors")) and time.time() < deadline:
            time.sleep(0.01)
        proc.kill()
        proc.communicate(timeout=30)
        self.assertFalse(os.path.exists(os.path.join(partial, "state.json")))
        self.assertEqual(latest_checkpoint(os.path.join(self.dir, "run")), os.path.join(self.dir, "run", "ckpt", "step-2"))
        code, events = run_in_process(dict(job, resume_from=os.path.join(self.dir, "run", "ckpt", "step-2"), run_dir=os.path.join(self.dir, "run")))
        self.assertEqual((code, events[-1]["status"], events[-1]["step"]), (0, "completed", 4))
        self.assertFalse(os.path.exists(partial))  # the rewrite of step 4 replaced the torn folder
        self.assertEqual(sorted(os.listdir(os.path.join(self.dir, "run", "ckpt"))), ["step-0", "step-2", "step-4"])

    def test_divergence_stops_without_a_checkpoint(self):
        job = make_job(self.dir, tiny_spec(), total_steps=6)
        job["config"]["train"].update(lr=1e30, grad_clip=0)  # the second step's gradients overflow
        code, events, stderr = run_train(write_job(self.dir, job))
        self.assertEqual(code, 3, stderr)
        self.assertEqual(events[-1]["status"], "diverged")
        bad = steps_of(events)[-1]
        self.assertIn("NaN", (bad["train_loss"], bad["grad_norm"]))  # non-finite numbers travel as strings
        self.assertEqual(os.listdir(os.path.join(self.dir, "run", "ckpt")), ["step-0"])

    def test_bad_input_is_one_error_line_and_exit_2(self):
        job = make_job(self.dir, tiny_spec(), total_steps=2)
        bad_bin = os.path.join(self.dir, "fineweb_val_000000.bin")
        with open(bad_bin, "wb") as f:
            f.write((123).to_bytes(4, "little") * 256 + b"\0" * 400)
        job["data"]["train"] = [{"path": bad_bin, "dtype": "uint16", "format": "llmc", "offset_tokens": 0, "tokens": 100}]
        cases = {
            "magic": (job, bad_bin),
            "spec key": (dict(make_job(self.dir, tiny_spec()), spec={**make_job(self.dir, tiny_spec())["spec"], "G": 3}), "spec.G"),
            "config key": (dict(make_job(self.dir, tiny_spec()), format="something/2"), "format"),
        }
        for what, (j, needle) in cases.items():
            with self.subTest(what):
                j = dict(j, run_dir=os.path.join(self.dir, f"run-{what}"))
                code, events, stderr = run_train(write_job(self.dir, j, f"{what}.json"))
                self.assertEqual(code, 2, stderr)
                self.assertEqual(len(events), 1)
                self.assertEqual(events[0]["event"], "error")
                self.assertIn(needle, events[0]["message"])
                self.assertNotIn("\n", events[0]["message"])
                self.assertFalse(os.path.exists(j["run_dir"]))  # nothing written


if __name__ == "__main__":
    unittest.main()
