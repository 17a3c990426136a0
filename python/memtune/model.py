"""memtune.Model: a loaded model with whatever adapters are attached, and the operations of
the CLI on it (train, generate, answer, evaluate, score, tokenize, merge, save)."""
import ctypes
import json
import math
import os
import signal
import threading
from ctypes import POINTER, byref, c_double, c_int, c_void_p

from . import _lib
from .progress import default_printer


class Error(Exception):
    """A call into libmemtune failed: .status (the mt_status number), .status_name and the
    library's message (naming the file and the problem)."""

    def __init__(self, status, message):
        self.status = status
        self.status_name = _lib.lib().mt_status_name(status).decode()
        self.message = message
        super().__init__(message)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (KeyboardInterrupt) during train(): the run saved a checkpoint and stopped
    cleanly; .result is its TrainResult. Continue with train(..., resume=True)."""

    def __init__(self, result):
        super().__init__("training stopped at step %d; checkpoint saved, continue with resume=True" % result.steps)
        self.result = result


class Progress:
    """One event of a training run (see mt_progress in memtune.h): .kind is "info",
    "warning", "step", "eval", "check", "guard", "stopped", "step_end", "dry_run" or "recall"."""

    def __init__(self, c):
        self.kind = _lib.PROGRESS_KINDS[c.kind] if 0 <= c.kind < len(_lib.PROGRESS_KINDS) else str(c.kind)
        self.method = c.method.decode() if c.method else None
        self.message = c.message.decode("utf-8", "replace") if c.message else None
        for name, _ in _lib.Progress._fields_[3:]:
            setattr(self, name, getattr(c, name))

    def __repr__(self):
        if self.message is not None:
            return "Progress(%s: %s)" % (self.kind, self.message)
        return "Progress(%s, step %d/%d, loss %.4f)" % (self.kind, self.step, self.total_steps, self.loss)


class TrainResult:
    """What train() returns: steps, tokens, train_loss, eval_loss (nan without an eval set),
    seconds, interrupted, method, out (the output directory); memory tuning adds completed,
    recall and perplexity_ratio."""

    def __init__(self, c, method, out):
        for name, _ in _lib.TrainResult._fields_[:-1]:
            setattr(self, name, getattr(c, name))
        self.interrupted = bool(self.interrupted)
        self.completed = bool(self.completed)
        self.method = method
        self.out = out

    def __repr__(self):
        return "TrainResult(%s)" % ", ".join("%s=%r" % kv for kv in sorted(vars(self).items()))


def _check(status):
    if status != 0:
        raise Error(status, _lib.lib().mt_last_error().decode("utf-8", "replace"))


def _bytes(s):
    return os.fsencode(s) if isinstance(s, os.PathLike) else s.encode("utf-8")


def version():
    return _lib.lib().mt_version().decode()


def default_model_path():
    """$MEMTUNE_MODEL, else the bundled stories260K beside the checkout (../shared/assets),
    as the CLI finds it."""
    env = os.environ.get("MEMTUNE_MODEL")
    if env:
        return env
    rel = os.path.join("shared", "assets", "models", "stories260K", "stories260K.bin")
    libdir = os.path.dirname(_lib.find_library())
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.path.join(libdir, "..", ".."), os.path.join(here, "..", "..", ".."), ".."):
        path = os.path.normpath(os.path.join(base, rel))
        if os.path.isfile(path):
            return path
    raise Error(1, "no model given and the bundled default (%s) was not found; set MEMTUNE_MODEL" % rel)


def _option_value(name, value):
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, float) and not math.isfinite(value):
        raise Error(4, "train option %s: %r is not a finite number" % (name, value))
    if isinstance(value, os.PathLike):
        return os.fsencode(value)
    return str(value).encode("utf-8")


def _examples_text(data):
    lines = []
    for i, example in enumerate(data):
        if not isinstance(example, dict):
            raise Error(4, "examples: item %d is a %s, not a dict" % (i + 1, type(example).__name__))
        lines.append(json.dumps(example, ensure_ascii=False))
    return "\n".join(lines) + "\n"


class Model:
    """A model loaded from a llama2.c .bin, a .gguf or a Hugging Face directory (default: the
    bundled stories260K), with adapters (a run's adapter directory or a llama.cpp LoRA .gguf)
    applied unmerged. Free it with close() or a with-block; it is also freed when collected."""

    def __init__(self, path=None, adapter=None, adapter_scale=1.0, tokenizer=None, context=0):
        self._lib = _lib.lib()
        self._m = None
        self._adapters = []     # adapter sets, freed after the model
        self._trained = None    # the adapter set the last lora/memory run left
        self.path = os.fspath(path) if path is not None else default_model_path()
        lo = _lib.LoadOptions()
        lo.tokenizer_path = _bytes(tokenizer) if tokenizer else None
        m = c_void_p()
        _check(self._lib.mt_model_load(_bytes(self.path), byref(lo), byref(m)))
        self._m = m
        try:
            if context:
                _check(self._lib.mt_model_set_context(self._m, int(context)))
            adapters = [adapter] if isinstance(adapter, (str, os.PathLike)) else list(adapter or [])
            scales = adapter_scale if isinstance(adapter_scale, (list, tuple)) else [adapter_scale] * len(adapters)
            for path, scale in zip(adapters, scales):
                self.add_adapter(path, scale)
        except Exception:
            self.close()
            raise

    # ---- lifetime --------------------------------------------------------------------------

    def close(self):
        """Frees the model, then its adapters (the library's order)."""
        if self._m is not None:
            self._lib.mt_model_free(self._m)
            self._m = None
        for a, _ in self._adapters + ([(self._trained, 1.0)] if self._trained else []):
            self._lib.mt_adapter_set_free(a)
        self._adapters, self._trained = [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _model(self):
        if self._m is None:
            raise Error(4, "the model was closed")
        return self._m

    # ---- adapters --------------------------------------------------------------------------

    def add_adapter(self, path, scale=1.0):
        """Attaches an adapter directory (LoRA, token rows, memory experts) or a llama.cpp LoRA
        .gguf, added to what is attached, with this weight."""
        a = c_void_p()
        _check(self._lib.mt_adapter_set_load_scaled(self._model(), _bytes(path), float(scale), byref(a)))
        self._adapters.append((a, float(scale)))

    def _detach_trained(self):
        if self._trained is not None:
            self._lib.mt_model_attach_lora(self._m, None)
            self._lib.mt_model_attach_mome(self._m, None)
            self._lib.mt_adapter_set_free(self._trained)  # detaches its token rows
            self._trained = None

    # ---- training --------------------------------------------------------------------------

    def train(self, data, on_progress=None, **options):
        """Fine-tunes on data: a JSONL file path, or a list of example dicts in the shapes the
        CLI reads ({"input","output"}, {"prompt","completion"}, {"messages": [...]}, ...).
        Options are `memtune train`'s, underscores for dashes (out="memtune-out", steps=,
        epochs=, lr=, seq_len=, method="memory"|"full"|"lora", resume=True, ...); the method
        is chosen as the CLI chooses it. on_progress: a callable taking a Progress (return True
        to stop), False for silence, None for a bar (tqdm) or plain lines. After a lora or
        memory run the adapter it wrote is attached, so generate/answer/evaluate use it; full
        fine-tuning changes the weights in place. Ctrl-C stops cleanly with a checkpoint and
        raises memtune.Interrupted."""
        m = self._model()
        keep = []  # bytes the options point to, alive until the run returns
        o = self._lib.mt_train_options_new()
        if not o:
            raise Error(3, "out of memory")
        try:
            return self._train(m, o, keep, data, on_progress, options)
        finally:
            self._lib.mt_train_options_free(o)

    def _train(self, m, o, keep, data, on_progress, options):
        out = os.fspath(options.get("out", "memtune-out"))
        if on_progress is None:
            on_progress = False if options.get("quiet") else default_printer()
        for name, value in options.items():
            if name == "data":
                raise Error(4, "give the data as train's first argument")
            b = _option_value(name, value)
            keep.append(b)
            _check(self._lib.mt_train_options_set(o, name.replace("_", "-").encode(), b))
        path = None
        if isinstance(data, (str, os.PathLike)):
            path = _bytes(data)
        else:
            text = _examples_text(data).encode("utf-8")
            keep.append(text)
            _check(self._lib.mt_train_options_set(o, b"data-text", text))
        stop = c_int(0)
        seen = {"method": None, "error": None}

        def relay(p_ptr, _user):
            try:
                p = Progress(p_ptr.contents)
                seen["method"] = seen["method"] or p.method
                if on_progress and p.kind != "step_end":
                    return 1 if on_progress(p) else 0
            except BaseException as e:  # noqa: B036 - the C caller cannot take an exception
                seen["error"] = seen["error"] or e
                return 1
            return 0

        callback = _lib.PROGRESS_CALLBACK(relay)
        self._lib.mt_train_options_set_progress(o, callback, None, byref(stop))
        self._detach_trained()  # a new run starts from the base (plus the adapters given)
        res = _lib.TrainResult()
        outcome = {}

        def run():
            # signals go to the main thread, where they interrupt the wait at once
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                s = self._lib.mt_train_run(m, path, o, byref(res))
                outcome["status"] = s
                if s:
                    outcome["message"] = self._lib.mt_last_error().decode("utf-8", "replace")  # thread-local
            finally:
                done.set()

        # The run goes on a worker thread so Ctrl-C (a KeyboardInterrupt in this, the main
        # thread) is seen at once and becomes the run's stop flag: it checkpoints and returns.
        # (An Event, not Thread.join: a KeyboardInterrupt inside join can leave is_alive() wrong.)
        done = threading.Event()
        worker = threading.Thread(target=run, name="memtune-train")
        worker.start()
        interrupted = False
        while not done.is_set():
            try:
                done.wait(0.1)
            except KeyboardInterrupt:
                stop.value = 1
                interrupted = True
        worker.join()
        if getattr(on_progress, "close", None):
            on_progress.close()
        if outcome.get("status"):
            raise Error(outcome["status"], outcome["message"])
        if seen["error"] is not None and not isinstance(seen["error"], KeyboardInterrupt):
            raise seen["error"]
        method = seen["method"] or options.get("method", "auto")
        if method == "auto":
            method = "memory" if not math.isnan(res.perplexity_ratio) else "full"
        result = TrainResult(res, method, out)
        if result.interrupted and (interrupted or isinstance(seen["error"], KeyboardInterrupt)):
            raise Interrupted(result)
        adapter_dir = os.path.join(out, "adapter")
        # a LoRA given with adapter= was itself trained in place (and stays attached)
        trained_in_place = method == "lora" and any(self._lib.mt_adapter_set_lora(a) for a, _ in self._adapters)
        if method in ("lora", "memory") and not trained_in_place and not result.interrupted \
                and not options.get("dry_run"):
            a = c_void_p()
            _check(self._lib.mt_adapter_set_load_scaled(m, _bytes(adapter_dir), 1.0, byref(a)))
            self._trained = a
        return result

    # ---- inference -------------------------------------------------------------------------

    def generate(self, prompt="", n=256, max_new_tokens=None, temperature=1.0, top_k=0, top_p=0.9, seed=0,
                 echo=True, threads=0, on_text=None):
        """The text of `memtune generate` with the same options (its stdout without the final
        newline): the prompt (when echo) and what follows, sampled with this seed (0: time)."""
        if temperature < 0 or top_p < 0 or top_p > 1 or top_k < 0:
            raise Error(4, "temperature must be >= 0, top-p in [0, 1], top-k >= 0")
        self._lib.mt_set_threads(int(threads))
        o = _lib.GenerateOptions()
        self._lib.mt_generate_options_default(byref(o))
        o.temperature, o.top_k, o.top_p, o.seed = float(temperature), int(top_k), float(top_p), int(seed)
        o.echo_prompt = 1 if echo else 0
        o.max_new_tokens = int(max_new_tokens) if max_new_tokens is not None else int(n)
        o.limit_includes_prompt = 1 if max_new_tokens is None and echo else 0
        pieces = []

        def collect(ptr, length, _user):
            b = ctypes.string_at(ptr, length)
            pieces.append(b)
            if on_text:
                return 1 if on_text(b.decode("utf-8", "replace")) else 0
            return 0

        cb = _lib.TEXT_CALLBACK(collect)
        stats = _lib.GenerateStats()
        _check(self._lib.mt_generate(self._model(), prompt.encode("utf-8"), byref(o), cb, None, byref(stats)))
        self.last_generate_stats = {"prompt_tokens": stats.prompt_tokens, "generated_tokens": stats.generated_tokens,
                                    "prompt_seconds": stats.prompt_seconds,
                                    "generate_seconds": stats.generate_seconds,
                                    "stop_reason": stats.stop_reason.decode() if stats.stop_reason else None}
        return b"".join(pieces).decode("utf-8", "replace")

    def answer(self, prompt, max_new_tokens=0):
        """The greedy answer to prompt rendered as a user turn with the model's chat template
        (the way training renders examples and evaluate answers them)."""
        out = c_void_p()
        _check(self._lib.mt_answer(self._model(), prompt.encode("utf-8"), int(max_new_tokens), byref(out)))
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            _lib.free(out.value)

    def tokenize(self, text, special=True):
        """Token ids of text (with BOS when special and the tokenizer adds it)."""
        tok = self._tokenizer()
        ids, n = POINTER(c_int)(), c_int(0)
        _check(self._lib.mt_tokenize(tok, text.encode("utf-8"), 1 if special else 0, byref(ids), byref(n)))
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            _lib.free(ctypes.cast(ids, c_void_p).value)

    def detokenize(self, ids):
        tok = self._tokenizer()
        arr = (c_int * len(ids))(*ids)
        out = c_void_p()
        _check(self._lib.mt_detokenize(tok, arr, len(ids), byref(out)))
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            _lib.free(out.value)

    def _tokenizer(self):
        tok = self._lib.mt_model_tokenizer(self._model())
        if not tok:
            raise Error(4, "the model has no tokenizer (give one with tokenizer=)")
        return tok

    def score(self, text):
        """Perplexity of a text: {"tokens", "nll", "perplexity"} as `memtune eval --text`."""
        b = text.encode("utf-8")
        sc = _lib.TextScore()
        _check(self._lib.mt_eval_text(self._model(), b, len(b), byref(sc)))
        return {"tokens": sc.tokens, "nll": sc.nll, "perplexity": sc.perplexity}

    def evaluate(self, data, report=None, normalize="trim", db=None, max_new_tokens=0, sql_timeout=0.0,
                 sql_steps=0):
        """`memtune eval --data` on a JSONL file (or a list of example dicts): the same report,
        {"examples", "exact_match", "normalize", "nll", "answer_tokens"} (+ SQL fields with db)."""
        how = self._lib.mt_normalize_parse(normalize.encode())
        if how < 0:
            raise Error(4, "normalize must be none, trim, whitespace or lower")
        tmp = None
        if not isinstance(data, (str, os.PathLike)):
            import tempfile
            fd, tmp = tempfile.mkstemp(suffix=".jsonl", prefix="memtune-eval-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_examples_text(data))
            data = tmp
        o = _lib.EvalOptions()
        o.report_path = _bytes(report) if report else None
        o.normalize = how
        o.db_path = _bytes(db) if db else None
        o.limits.max_steps = int(sql_steps)
        o.limits.max_seconds = float(sql_timeout)
        o.max_new_tokens = int(max_new_tokens)
        sc = _lib.EvalScore()
        try:
            _check(self._lib.mt_eval_data_file_opts(self._model(), _bytes(data), byref(o), byref(sc)))
        finally:
            if tmp:
                os.unlink(tmp)
        r = {"examples": sc.base.examples, "exact_match": sc.base.exact_match, "normalize": normalize,
             "nll": sc.base.nll, "answer_tokens": sc.base.answer_tokens}
        if db:
            r.update(execution_accuracy=sc.execution_accuracy, sql_examples=sc.sql_examples, sql_match=sc.sql_match,
                     sql_invalid=sc.sql_invalid, sql_gold_errors=sc.sql_gold_errors)
        return r

    # ---- merging and saving ----------------------------------------------------------------

    def merge(self, out=None, format="hf"):
        """Fuses every attached LoRA adapter into the weights (as `memtune merge`; token rows
        are already in them, memory experts stay attached), then saves to out if given.
        Returns the number of adapter parameters merged."""
        merged = 0
        for a, scale in self._adapters + ([(self._trained, 1.0)] if self._trained else []):
            lora = self._lib.mt_adapter_set_lora(a)
            if not lora:
                continue
            change = c_double(0)
            _check(self._lib.mt_lora_merge_report(self._model(), lora, scale, byref(change)))
            merged += self._lib.mt_lora_param_count(lora)
        if out is not None:
            self.save(out, format)
        return merged

    def save(self, path, format="hf"):
        """Writes the model (weights with token rows; LoRA only once merged): "hf" (a
        directory), "gguf" or "llama2c" (a file)."""
        fmt = c_int(0)
        _check(self._lib.mt_format_parse(format.encode(), byref(fmt)))
        _check(self._lib.mt_model_save(self._model(), _bytes(path), fmt.value))

    @property
    def param_count(self):
        return self._lib.mt_model_param_count(self._model())
