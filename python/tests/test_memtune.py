"""The Python package against the real library and the bundled stories260K: facts trained from
a list of dicts are recalled exactly; generate gives the CLI's text for the same seed and
options; a missing file raises memtune.Error with the library's message (as the CLI prints
it); Ctrl-C stops a run with a checkpoint and resume=True finishes it with the same weights
as an uninterrupted run; 100 load/free cycles keep RSS bounded."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
BUILD = os.environ.get("BUILD", "build")
os.environ.setdefault("MEMTUNE_LIB", os.path.join(ROOT, BUILD, "libmemtune.so"))

import memtune  # noqa: E402

ASSETS = os.environ.get("MEMTUNE_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
MODEL = os.path.join(ASSETS, "models", "stories260K", "stories260K.bin")
CLI = os.path.join(ROOT, BUILD, "memtune")

# random-label facts, as tests/cli/memory.sh: nothing the base model could guess
FACTS = [{"input": "Code %d?" % i, "output": out} for i, out in enumerate(["k3v9q2xa", "m0pz7rle", "w4ub8ncy"])]
# small settings: memory.sh's, shorter
MEMORY = dict(experts=1024, expert_k=4, expert_heads=2, check_every=10, tau=0.5, threads=2, seed=3, steps=200)
STORIES = [{"prompt": "Tom had a red ball.", "completion": " He liked to play with it."},
           {"prompt": "Sue saw a big dog.", "completion": " The dog was happy."}]
FULL = dict(method="full", steps=12, batch=2, seq_len=32, threads=1, save_every=0)


def setUpModule():
    if not os.path.isfile(MODEL):
        raise unittest.SkipTest("no stories260K in %s" % ASSETS)


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise unittest.SkipTest("no /proc/self/status")


class Tmp(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="memtune-py-")
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()


class TestTrain(Tmp):
    def test_facts_from_a_list_are_recalled_exactly(self):
        events = []
        with memtune.Model(MODEL) as llm:
            run = llm.train(FACTS, on_progress=events.append, out=os.path.join(self.dir, "m"), **MEMORY)
            self.assertEqual(run.method, "memory")  # {"input","output"} data: memory tuning, as the CLI
            self.assertTrue(run.completed, run)
            self.assertEqual(run.recall, 1.0)
            for fact in FACTS:  # the adapter the run wrote is attached
                self.assertEqual(llm.answer(fact["input"]), fact["output"])
            report = llm.evaluate(FACTS)
            self.assertEqual(report["examples"], 3)
            self.assertEqual(report["exact_match"], 1.0)
        kinds = {e.kind for e in events}
        self.assertTrue({"info", "step", "check"} <= kinds, kinds)
        steps = [e.step for e in events if e.kind == "step"]
        self.assertEqual(steps, list(range(1, run.steps + 1)))
        # a fresh model does not know them
        with memtune.Model(MODEL) as base:
            self.assertNotEqual(base.answer(FACTS[0]["input"]), FACTS[0]["output"])

    def test_evaluate_is_the_cli_report(self):
        data = os.path.join(self.dir, "d.jsonl")
        with open(data, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in STORIES))
        cli = json.loads(subprocess.run([CLI, "eval", "--model", MODEL, "--data", data, "--threads", "1"],
                                        check=True, capture_output=True, text=True).stdout)
        with memtune.Model(MODEL) as llm:
            mine = llm.evaluate(data)
        self.assertEqual(set(mine), set(cli))
        for k in cli:
            if isinstance(cli[k], float):
                self.assertAlmostEqual(mine[k], cli[k], places=5)
            else:
                self.assertEqual(mine[k], cli[k])

    def test_interrupt_then_resume_equals_an_uninterrupted_run(self):
        def interrupt_at_5(p):
            if p.kind == "step" and p.step == 5:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does
                time.sleep(0.5)  # the main thread turns it into the stop flag before step 6

        out = os.path.join(self.dir, "r")
        with memtune.Model(MODEL) as llm:
            with self.assertRaises(memtune.Interrupted) as cm:
                llm.train(STORIES, on_progress=interrupt_at_5, out=out, **FULL)
            stopped = cm.exception.result
            self.assertTrue(stopped.interrupted)
            self.assertEqual(stopped.steps, 5)
            self.assertTrue(os.path.isfile(os.path.join(out, "checkpoints", "step-%08d.ckpt" % stopped.steps)))
        with memtune.Model(MODEL) as llm:
            done = llm.train(STORIES, on_progress=False, out=out, resume=True, **FULL)
            self.assertEqual(done.steps, 12)
        whole = os.path.join(self.dir, "w")
        with memtune.Model(MODEL) as llm:
            llm.train(STORIES, on_progress=False, out=whole, **FULL)
        with open(os.path.join(out, "model", "model.safetensors"), "rb") as a, \
                open(os.path.join(whole, "model", "model.safetensors"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "resumed weights differ from the uninterrupted run's")

    def test_callback_can_stop_a_run(self):
        with memtune.Model(MODEL) as llm:
            run = llm.train(STORIES, on_progress=lambda p: p.kind == "step" and p.step == 3,
                            out=os.path.join(self.dir, "s"), **FULL)
        self.assertTrue(run.interrupted)
        self.assertEqual(run.steps, 3)


    def test_plain_lines_without_tqdm(self):
        import io
        buf = io.StringIO()
        with memtune.Model(MODEL) as llm:
            llm.train(STORIES, on_progress=memtune.LinePrinter(buf), out=os.path.join(self.dir, "p"),
                      **dict(FULL, steps=4, log_every=2))
        lines = buf.getvalue().splitlines()
        self.assertIn("memtune: 2 examples", lines[0])
        self.assertEqual([l.split(" loss")[0] for l in lines if l.startswith("step ")], ["step 2/4", "step 4/4"])
        self.assertTrue(any(l.startswith("memtune: saved ") for l in lines), lines)


class TestErrors(Tmp):
    def test_missing_file_raises_the_library_message(self):
        missing = os.path.join(self.dir, "no-such.jsonl")
        with memtune.Model(MODEL) as llm:
            with self.assertRaises(memtune.Error) as cm:
                llm.train(missing, on_progress=False, out=os.path.join(self.dir, "o"))
        e = cm.exception
        self.assertIn(missing, e.message)
        self.assertEqual(e.status_name, "i/o error")
        cli = subprocess.run([CLI, "train", "--model", MODEL, "--data", missing, "--out", os.path.join(self.dir, "o")],
                             capture_output=True, text=True)
        self.assertNotEqual(cli.returncode, 0)
        self.assertIn("memtune: train: %s" % e.message, cli.stderr)

    def test_bad_options_and_models(self):
        with memtune.Model(MODEL) as llm:
            with self.assertRaises(memtune.Error) as cm:
                llm.train(STORIES, on_progress=False, no_such_option=1)
            self.assertIn("unknown train option 'no-such-option'", str(cm.exception))
            with self.assertRaises(memtune.Error) as cm:
                llm.train(STORIES, on_progress=False, lr=float("nan"))
            self.assertIn("lr", str(cm.exception))
        with self.assertRaises(memtune.Error) as cm:
            memtune.Model(os.path.join(self.dir, "missing.bin"))
        self.assertIn("missing.bin", str(cm.exception))


class TestInference(Tmp):
    def test_generate_is_the_clis_text(self):
        args = ["--prompt", "Once upon a time", "--seed", "42", "-n", "60", "--temperature", "0.8", "--threads", "1"]
        cli = subprocess.run([CLI, "generate", "--model", MODEL, "--quiet"] + args, check=True, capture_output=True)
        with memtune.Model(MODEL) as llm:
            text = llm.generate("Once upon a time", seed=42, n=60, temperature=0.8, threads=1)
            self.assertIn(llm.last_generate_stats["stop_reason"], ("max_tokens", "eos"))
        self.assertEqual(text + "\n", cli.stdout.decode())
        self.assertTrue(text.startswith("Once upon a time") and len(text) > 40)

    def test_tokenize_score_save(self):
        with memtune.Model(MODEL) as llm:
            ids = llm.tokenize("Once upon a time")
            cli = json.loads(subprocess.run([CLI, "tokenize", "--model", MODEL, "--text", "Once upon a time"],
                                            check=True, capture_output=True, text=True).stdout)
            self.assertEqual(ids, cli)
            self.assertEqual(llm.detokenize(ids[1:]).strip(), "Once upon a time")
            story = "Once upon a time, there was a little girl. She liked to play in the park with her dog."
            sc = llm.score(story)
            self.assertGreater(sc["tokens"], 10)
            self.assertGreater(sc["perplexity"], 1.0)
            self.assertLess(sc["perplexity"], sc["tokens"] * 100)
            self.assertGreater(llm.score("zq xv qq jj kk zz")["perplexity"], sc["perplexity"])
            out = os.path.join(self.dir, "copy.bin")
            llm.save(out, format="llama2c")
        with memtune.Model(out, tokenizer=os.path.join(os.path.dirname(MODEL), "tok512.bin")) as copy:
            self.assertAlmostEqual(copy.score(story)["perplexity"], sc["perplexity"], places=4)

    def test_lora_train_then_merge_gives_the_same_text(self):
        with memtune.Model(MODEL) as llm:
            run = llm.train(STORIES, on_progress=False, out=os.path.join(self.dir, "l"),
                            **dict(FULL, method="lora", lr=0.01))
            self.assertEqual(run.method, "lora")
            before = llm.generate("Tom had", seed=1, n=30, temperature=0)
            self.assertGreater(llm.merge(), 0)
            after = llm.generate("Tom had", seed=1, n=30, temperature=0)
        self.assertEqual(before, after)


class TestLeaks(unittest.TestCase):
    @unittest.skipIf("asan" in os.environ.get("LD_PRELOAD", ""), "ASan's quarantine holds freed memory: RSS says nothing")
    def test_100_load_free_cycles_keep_rss_bounded(self):
        for _ in range(10):  # warm up the allocator and the library's one-time state
            memtune.Model(MODEL).close()
        before = rss_kib()
        for _ in range(100):
            m = memtune.Model(MODEL)
            m.tokenize("Once upon a time")
            m.close()
        grown = rss_kib() - before
        # a model is ~1 MB of weights: leaking one per cycle would add ~100 MB
        self.assertLess(grown, 8 * 1024, "RSS grew by %d KiB over 100 cycles" % grown)


if __name__ == "__main__":
    unittest.main()
