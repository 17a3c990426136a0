"""What a training run shows while it runs: a tqdm bar when tqdm is installed (notebooks
included), plain lines otherwise. Either is a callable taking a memtune.Progress event;
pass your own callable as on_progress= to do something else (return True to stop the run)."""
import sys


def _message_line(p):
    if p.kind == "info":
        return "memtune: %s" % p.message
    if p.kind == "warning":
        return "memtune: warning: %s" % p.message
    if p.kind == "eval":
        return "step %d eval loss %.4f" % (p.step, p.eval_loss)
    if p.kind == "check":
        return ("memtune: step %d: %d/%d facts memorised (%d exact), general perplexity %.4g (base %.4g), %.0f s"
                % (p.step, p.facts_memorised, p.facts, p.facts_exact, p.general_perplexity, p.base_perplexity,
                   p.elapsed_s))
    if p.kind == "guard":
        return ("memtune: general perplexity %.4g is %.3fx the base (limit %.3g): general text weighs %g from now on"
                % (p.general_perplexity, p.general_ratio, p.general_limit, p.general_weight))
    if p.kind == "stopped":
        return "memtune: stopped at step %d; checkpoint saved, continue with resume=True" % p.step
    if p.kind == "dry_run":
        return p.message
    return None


class LinePrinter:
    """Plain lines on a stream (stderr by default): the messages, and a line per logged step."""

    def __init__(self, stream=None):
        self.stream = stream

    def __call__(self, p):
        out = self.stream or sys.stderr
        line = _message_line(p)
        if line is None and p.kind == "step" and p.logged:
            if p.method == "memory":
                line = "step %d/%d loss %.5f" % (p.step, p.total_steps, p.loss)
            else:
                line = ("step %d/%d loss %.4f lr %.3g grad_norm %.3g %.0f tok/s"
                        % (p.step, p.total_steps, p.window_loss, p.lr, p.grad_norm, p.tokens_per_s))
        if line is not None:
            print(line, file=out, flush=True)


class TqdmPrinter:
    """A tqdm progress bar over the steps; messages are written above it."""

    def __init__(self, tqdm):
        self.tqdm = tqdm
        self.bar = None

    def __call__(self, p):
        if p.kind == "step":
            if self.bar is None:
                self.bar = self.tqdm(total=p.total_steps, initial=p.step - 1, unit="step", desc="memtune")
            self.bar.update(p.step - self.bar.n)
            self.bar.set_postfix(loss="%.4f" % p.loss, refresh=False)
            return
        line = _message_line(p)
        if line is not None:
            (self.tqdm.write if self.bar is not None else print)(line)
        if p.kind == "stopped":
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def default_printer():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return LinePrinter()
    return TqdmPrinter(tqdm)
